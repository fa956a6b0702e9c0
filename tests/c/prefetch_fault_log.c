/* svm_prefetch both ways and svm_fault_log: a malloc'd buffer prefetched
 * to VRAM runs a GPU job with no fault; prefetched back to system memory,
 * its pages are there with the job's data; a GPU access where nothing is
 * mapped ends the job faulted and shows in the VM's fault log. */
#include "common.h"

#define LEN ((size_t)4 << 20)
#define PAGES (LEN / 4096)
#define HOLE 0x100000000000ull

static void all_pages(const void *p, uint8_t want)
{
    static uint8_t st[PAGES];
    OK(svm_page_states(p, PAGES, st));
    for (size_t i = 0; i < PAGES; i++)
        CHECK(st[i] == want, "page %zu: state %u, want %u", i, st[i], want);
}

int main(void)
{
    uint32_t vm = mirror_vm();
    uint32_t *p = aligned_alloc((size_t)2 << 20, LEN);
    CHECK(p != NULL && svm_owns(p) == 1, "aligned_alloc(4 MiB)");
    for (size_t i = 0; i < LEN / 4; i++)
        p[i] = (uint32_t)i;
    OK(svm_prefetch(p, LEN, SVM_LOCATION_DEVICE));
    all_pages(p, SVM_PAGE_DEVICE);
    svm_gpu_stats_t before, after;
    uint64_t job = 0;
    OK(svm_gpu_stats(&before));
    OK(svm_submit_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN, 4, 1, 64, &job));
    OK(svm_wait(job, 120000, NULL));
    OK(svm_gpu_stats(&after));
    CHECK(after.gpu_faults == before.gpu_faults, "the job faulted %llu times",
          (unsigned long long)(after.gpu_faults - before.gpu_faults));
    OK(svm_prefetch(p, LEN, SVM_LOCATION_SYSTEM));
    all_pages(p, SVM_PAGE_SYSTEM);
    check_words(p, LEN / 4, 1, 1);

    OK(svm_submit_kernel(vm, SVM_KERNEL_TOUCH_PAGES, (void *)(uintptr_t)HOLE, 4096, 0, 0, 1,
                         &job));
    int rc = svm_wait(job, 60000, NULL);
    CHECK(rc == SVM_E_JOB_FAULTED, "a job at an unmapped address: %d (%s)", rc,
          svm_strerror(rc));
    svm_fault_record_t log[64];
    size_t count = 0;
    uint64_t total = 0;
    OK(svm_fault_log(vm, log, 64, &count, &total));
    CHECK(count >= 1 && total >= count, "fault log: %zu of %llu", count,
          (unsigned long long)total);
    CHECK(log[count - 1].address == HOLE, "last fault at %#llx",
          (unsigned long long)log[count - 1].address);
    CHECK(svm_fault_log(vm, NULL, 1, &count, NULL) == SVM_E_INVALID, "NULL out");
    free(p);
    OK(svm_vm_destroy(vm));
    printf("prefetch_fault_log: ok\n");
    return 0;
}
