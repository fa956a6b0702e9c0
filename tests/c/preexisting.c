/* The stated limit: memory the process had before the library loaded
 * (static data, the stack) is not pager memory; a GPU access to it
 * faults the job (SVM_E_JOB_FAULTED), and the process goes on. */
#include "common.h"

static uint32_t static_words[1024];

int main(void)
{
    uint32_t vm = mirror_vm();
    uint32_t stack_words[64];
    CHECK(svm_owns(static_words) == 0 && svm_owns(stack_words) == 0, "not pager memory");
    int rc = gpu_store(vm, static_words, 4, 1);
    CHECK(rc == SVM_E_JOB_FAULTED, "static data: %d (%s)", rc, svm_strerror(rc));
    rc = gpu_store(vm, stack_words, 4, 1);
    CHECK(rc == SVM_E_JOB_FAULTED, "stack: %d (%s)", rc, svm_strerror(rc));
    /* Heap memory still works after the faulted jobs. */
    uint32_t *p = malloc(4096);
    CHECK(p != NULL, "malloc");
    OK(gpu_store(vm, p, 4, 3));
    check_words(p, 4, 3, 1);
    free(p);
    OK(svm_vm_destroy(vm));
    printf("preexisting: ok\n");
    return 0;
}
