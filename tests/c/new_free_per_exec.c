/* IGT's "new/free per exec": each round allocates its buffer and its
 * batch, runs, checks and frees both. */
#include "common.h"

int main(void)
{
    uint32_t vm = mirror_vm();
    for (uint32_t round = 0; round < 32; round++) {
        size_t bytes = 4096u * (1 + round % 5) + 12 * round;
        uint32_t *p = malloc(bytes);
        CHECK(p != NULL && svm_owns(p), "round %u: malloc", round);
        OK(gpu_store(vm, p, 16, round * 100));
        check_words(p, 16, round * 100, 1);
        free(p);
    }
    OK(svm_vm_destroy(vm));
    printf("new_free_per_exec: ok\n");
    return 0;
}
