/* IGT's malloc shape: allocate with malloc, the GPU writes through the
 * mirror, the CPU checks. Small, page-sized and large allocations; the
 * written pages are in VRAM afterwards. */
#include "common.h"

int main(void)
{
    uint32_t vm = mirror_vm();
    size_t sizes[] = {16, 4096, 100000, 1 << 20, 8 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k] / 4;
        uint32_t *p = malloc(sizes[k]);
        CHECK(p != NULL, "malloc(%zu)", sizes[k]);
        CHECK(svm_owns(p) == 1, "malloc(%zu) is not pager memory", sizes[k]);
        memset(p, 0xaa, sizes[k]);
        size_t stores = n < 64 ? n : 64;
        OK(gpu_store(vm, p, stores, 1000 * (uint32_t)k));
        check_words(p, stores, 1000 * (uint32_t)k, 1);
        if (sizes[k] >= (1 << 20)) {
            gpu_fill(vm, p, sizes[k], 7 + (uint32_t)k);
            uint8_t st;
            OK(svm_page_states(p, 1, &st));
            CHECK(st == SVM_PAGE_DEVICE, "page state after a GPU fill: %u", st);
            check_words(p, n, 7 + (uint32_t)k, 0);
        }
        free(p);
    }
    /* Larger than the first region: a new region, bound into the mirror
     * VM that already exists. */
    size_t huge_len = (size_t)300 << 20;
    uint32_t *huge = malloc(huge_len);
    CHECK(huge != NULL && svm_owns(huge), "malloc(300 MiB)");
    uint32_t *far = huge + (huge_len - 4096) / 4;
    OK(gpu_store(vm, far, 8, 4242));
    check_words(far, 8, 4242, 1);
    free(huge);
    uint32_t *z = calloc(1 << 18, 4);
    CHECK(z != NULL, "calloc");
    check_words(z, 1 << 18, 0, 0);
    free(z);
    OK(svm_vm_destroy(vm));
    printf("malloc_gpu: ok\n");
    return 0;
}
