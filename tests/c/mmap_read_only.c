/* Memory mapped read-only through libsvm, and protections a mirror made
 * later inherits (issue 16: read-only). An anonymous mmap(PROT_READ) is
 * pager memory the GPU may read but not write; memory mprotect'ed before
 * the mirror VM existed is read-only in it too; once unmapped, the pages
 * a new read-write mapping reuses are writable by the GPU again. */
#include <sys/mman.h>

#include "common.h"

#define LEN ((size_t)64 << 10)

int main(void)
{
    CHECK(svm_connected() == 1, "not connected: run under svm exec");
    uint32_t *p = aligned_alloc(4096, LEN);
    CHECK(p != NULL && svm_owns(p) == 1, "aligned_alloc(64 KiB)");
    for (size_t i = 0; i < LEN / 4; i++)
        p[i] = (uint32_t)i;
    CHECK(mprotect(p, LEN, PROT_READ) == 0, "mprotect(PROT_READ)");

    /* The mirror is made after the mprotect: it starts read-only there. */
    uint32_t vm = mirror_vm();
    OK(run_kernel(vm, SVM_KERNEL_TOUCH_PAGES, p, LEN));
    int rc = run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN);
    CHECK(rc == SVM_E_JOB_FAULTED, "a GPU write in a later mirror: %d (%s)", rc,
          svm_strerror(rc));
    check_words(p, LEN / 4, 0, 1);
    CHECK(mprotect(p, LEN, PROT_READ | PROT_WRITE) == 0, "mprotect(rw)");
    OK(run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN));
    check_words(p, LEN / 4, 1, 1);
    free(p);

    uint32_t *q = mmap(NULL, LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(q != MAP_FAILED && svm_owns(q) == 1, "mmap(PROT_READ) is pager memory");
    OK(run_kernel(vm, SVM_KERNEL_TOUCH_PAGES, q, LEN));
    rc = run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, q, LEN);
    CHECK(rc == SVM_E_JOB_FAULTED, "a GPU write to an mmap(PROT_READ): %d (%s)", rc,
          svm_strerror(rc));
    check_words(q, LEN / 4, 0, 0);
    CHECK(munmap(q, LEN) == 0, "munmap");

    uint32_t *r = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(r != MAP_FAILED && svm_owns(r) == 1, "mmap(rw) is pager memory");
    OK(run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, r, LEN));
    check_words(r, LEN / 4, 1, 0);
    CHECK(munmap(r, LEN) == 0, "munmap");
    OK(svm_vm_destroy(vm));
    printf("mmap_read_only: ok\n");
    return 0;
}
