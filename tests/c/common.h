/* Helpers shared by the tests/c programs (run under `svm exec`). */
#ifndef SVM_TEST_COMMON_H
#define SVM_TEST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svm.h"

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

#define OK(call)                                                           \
    do {                                                                   \
        int rc_ = (call);                                                  \
        CHECK(rc_ == SVM_OK, "%s = %d (%s)", #call, rc_, svm_strerror(rc_)); \
    } while (0)

/* Connected, with a mirror VM. */
static inline uint32_t mirror_vm(void)
{
    uint32_t vm = 0;
    CHECK(svm_connected() == 1, "not connected: run under svm exec");
    OK(svm_vm_create_mirror(&vm));
    return vm;
}

/* The GPU stores value + i at dst[i] for i < n, from a batch buffer that
 * lives in malloc'd memory itself; returns the job's status code. */
static inline int gpu_store(uint32_t vm, uint32_t *dst, size_t n, uint32_t value)
{
    size_t cap = n * 4 + 2, len = 0;
    uint32_t *batch = malloc(cap * sizeof(uint32_t));
    uint64_t *fence = malloc(sizeof(uint64_t));
    uint64_t job = 0;
    svm_job_result_t res;
    int rc;
    CHECK(batch && fence, "malloc failed");
    *fence = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = svm_batch_store_dword(batch + len, cap - len,
                                         (uint64_t)(uintptr_t)(dst + i),
                                         value + (uint32_t)i);
        CHECK(w > 0, "batch full");
        len += w;
    }
    CHECK(svm_batch_end(batch + len, cap - len) > 0, "batch full");
    rc = svm_submit_batch(vm, batch, fence, 0xf00d, &job);
    if (rc == SVM_OK) {
        rc = svm_wait(job, 60000, &res);
        if (rc == SVM_OK)
            CHECK(*fence == 0xf00d, "fence not written: %llx",
                  (unsigned long long)*fence);
    }
    free(batch);
    free(fence);
    return rc;
}

/* A built-in kernel over [p, p + len) (stride 4, value 1, 16 threads);
 * returns how its job ended. */
static inline int run_kernel(uint32_t vm, int kernel, void *p, uint64_t len)
{
    uint64_t job = 0;
    OK(svm_submit_kernel(vm, kernel, p, len, 4, 1, 16, &job));
    return svm_wait(job, 60000, NULL);
}

/* The GPU writes value to every u32 of [p, p + len) (a built-in kernel). */
static inline void gpu_fill(uint32_t vm, void *p, uint64_t len, uint32_t value)
{
    uint64_t job = 0;
    OK(svm_submit_kernel(vm, SVM_KERNEL_STRIDED_WRITE, p, len, 4, value, 64, &job));
    OK(svm_wait(job, 120000, NULL));
}

static inline void check_words(const uint32_t *p, size_t n, uint32_t value, int step)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t want = value + (step ? (uint32_t)i : 0);
        CHECK(p[i] == want, "word %zu of %p: %u, want %u", i, (void *)p, p[i], want);
    }
}

#endif
