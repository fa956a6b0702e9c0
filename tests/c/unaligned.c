/* Unaligned allocations: odd sizes, odd offsets into them, and
 * over-aligned ones; the GPU writes the dwords inside each. */
#include "common.h"

int main(void)
{
    uint32_t vm = mirror_vm();
    for (uint32_t k = 0; k < 24; k++) {
        size_t bytes = 13 + 4099u * k;
        char *raw = malloc(bytes);
        CHECK(raw != NULL && svm_owns(raw), "malloc(%zu)", bytes);
        /* The first 4-byte aligned word after an odd offset. */
        uintptr_t a = ((uintptr_t)raw + 1 + 3) & ~(uintptr_t)3;
        size_t n = ((uintptr_t)raw + bytes - a) / 4;
        n = n > 8 ? 8 : n;
        OK(gpu_store(vm, (uint32_t *)a, n, 77 * k));
        check_words((uint32_t *)a, n, 77 * k, 1);
        free(raw);
    }
    for (size_t align = 64; align <= (1 << 21); align <<= 3) {
        void *p = NULL;
        CHECK(posix_memalign(&p, align, 3 * align + 4) == 0, "posix_memalign");
        CHECK((uintptr_t)p % align == 0 && svm_owns(p), "alignment %zu", align);
        OK(gpu_store(vm, p, 4, (uint32_t)align));
        check_words(p, 4, (uint32_t)align, 1);
        free(p);
    }
    char *r = malloc(10);
    CHECK(r != NULL, "malloc");
    strcpy(r, "realloc");
    r = realloc(r, 3 << 20);
    CHECK(r != NULL && strcmp(r, "realloc") == 0 && svm_owns(r), "realloc grew");
    OK(gpu_store(vm, (uint32_t *)(r + (2 << 20)), 4, 5));
    check_words((uint32_t *)(r + (2 << 20)), 4, 5, 1);
    r = realloc(r, 100);
    CHECK(r != NULL && strcmp(r, "realloc") == 0, "realloc shrank");
    free(r);
    OK(svm_vm_destroy(vm));
    printf("unaligned: ok\n");
    return 0;
}
