/* mprotect through libsvm: the GPU follows the CPU's protection of pager
 * memory (issue 16: read-only). A GPU write to a page made read-only ends
 * the job faulted, leaves the data as it was and shows in the fault log as
 * a write; PROT_NONE refuses GPU reads too; read-write again, the write
 * lands. */
#include <sys/mman.h>

#include "common.h"

#define LEN ((size_t)64 << 10)

int main(void)
{
    uint32_t vm = mirror_vm();
    uint32_t *p = aligned_alloc(4096, LEN);
    CHECK(p != NULL && svm_owns(p) == 1, "aligned_alloc(64 KiB)");
    for (size_t i = 0; i < LEN / 4; i++)
        p[i] = (uint32_t)i;
    OK(run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN));
    check_words(p, LEN / 4, 1, 1);

    CHECK(mprotect(p, LEN, PROT_READ) == 0, "mprotect(PROT_READ)");
    OK(run_kernel(vm, SVM_KERNEL_TOUCH_PAGES, p, LEN));
    int rc = run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN);
    CHECK(rc == SVM_E_JOB_FAULTED, "a GPU write to read-only memory: %d (%s)", rc,
          svm_strerror(rc));
    check_words(p, LEN / 4, 1, 1);
    svm_fault_record_t log[64];
    size_t count = 0;
    OK(svm_fault_log(vm, log, 64, &count, NULL));
    CHECK(count >= 1 && log[count - 1].access == 1, "the refused write is logged (%zu)", count);

    CHECK(mprotect(p, LEN, PROT_NONE) == 0, "mprotect(PROT_NONE)");
    rc = run_kernel(vm, SVM_KERNEL_TOUCH_PAGES, p, LEN);
    CHECK(rc == SVM_E_JOB_FAULTED, "a GPU read of PROT_NONE memory: %d (%s)", rc,
          svm_strerror(rc));

    CHECK(mprotect(p, LEN, PROT_READ | PROT_WRITE) == 0, "mprotect(PROT_READ | PROT_WRITE)");
    OK(run_kernel(vm, SVM_KERNEL_INCREMENT_ALL, p, LEN));
    check_words(p, LEN / 4, 2, 1);
    free(p);
    OK(svm_vm_destroy(vm));
    printf("mprotect: ok\n");
    return 0;
}
