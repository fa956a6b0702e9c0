/* The OpenMP-style repro (ROCm rocm-libraries #12323): a heap chunk the
 * GPU left in VRAM is freed and handed out again by malloc; 16 threads
 * first-touch it at once. free() discarded it, so the touches are fresh
 * zero pages: bounded time, and no page migrates back to system memory
 * (none was read before it was written). */
#include <pthread.h>
#include <time.h>
#include "common.h"

#define THREADS 16
#define BYTES (64u << 20)

static char *heap;

static void *touch(void *arg)
{
    size_t t = (size_t)arg, slice = BYTES / THREADS;
    char *mine = heap + t * slice;
    for (size_t off = 0; off < slice; off += 4096) {
        /* Reads zero: the data freed before is gone, not copied back. */
        CHECK(*(volatile uint32_t *)(mine + off) == 0, "thread %zu: stale data", t);
        memset(mine + off, (int)t + 1, 4096);
    }
    return NULL;
}

/* The control: a live buffer in VRAM that threads read back. */
#define LIVE (8u << 20)
static char *live;
static volatile uint32_t sink;

static void *read_back(void *arg)
{
    size_t t = (size_t)arg, slice = LIVE / THREADS;
    for (size_t off = 0; off < slice; off += 4096)
        sink += *(volatile uint32_t *)(live + t * slice + off);
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    uint32_t vm = mirror_vm();
    char *first = malloc(BYTES);
    CHECK(first != NULL, "malloc");
    gpu_fill(vm, first, BYTES, 0xdeadbeef);
    uint8_t st;
    OK(svm_page_states(first + BYTES / 2, 1, &st));
    CHECK(st == SVM_PAGE_DEVICE, "not in VRAM: %u", st);
    svm_gpu_stats_t before, after;
    OK(svm_gpu_stats(&before));
    free(first);
    heap = malloc(BYTES);
    CHECK(heap != NULL, "malloc again");
    double t0 = now();
    pthread_t th[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, touch, (void *)t) == 0, "pthread_create");
    for (size_t t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    double secs = now() - t0;
    OK(svm_gpu_stats(&after));
    unsigned long long back = after.pages_to_ram - before.pages_to_ram;
    printf("openmp_reuse: reused=%d touch=%.3fs pages_to_ram=%llu\n",
           heap == first, secs, back);
    CHECK(back == 0, "%llu pages migrated back; none was read before written", back);
    CHECK(secs < 30.0, "first touch took %.1f s", secs);
    for (size_t t = 0; t < THREADS; t++)
        CHECK(heap[t * (BYTES / THREADS)] == (char)(t + 1), "slice %zu", t);
    free(heap);

    /* The control, so the zero above is not vacuous: memory still in use
     * that the GPU left in VRAM does migrate back when threads read it,
     * at most once per page. */
    live = malloc(LIVE);
    CHECK(live != NULL, "malloc live");
    gpu_fill(vm, live, LIVE, 5);
    OK(svm_gpu_stats(&before));
    for (size_t t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, read_back, (void *)t) == 0, "pthread_create");
    for (size_t t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    OK(svm_gpu_stats(&after));
    back = after.pages_to_ram - before.pages_to_ram;
    printf("openmp_reuse: control read-back pages_to_ram=%llu of %u pages\n", back, LIVE / 4096);
    CHECK(back > 0 && back <= LIVE / 4096, "control: %llu pages migrated back", back);
    free(live);
    OK(svm_vm_destroy(vm));
    printf("openmp_reuse: ok\n");
    return 0;
}
