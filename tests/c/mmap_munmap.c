/* Anonymous mappings are pager memory: the GPU writes them, munmap takes
 * them back (a new mapping reads zeros), mremap keeps their data. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(void)
{
    uint32_t vm = mirror_vm();
    size_t len = 4 << 20;
    for (int round = 0; round < 4; round++) {
        uint32_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED && svm_owns(p), "round %d: mmap", round);
        check_words(p, len / 4, 0, 0);
        gpu_fill(vm, p, len, 0x5150 + round);
        check_words(p, len / 4, 0x5150 + round, 0);
        /* Unmapping the middle splits it; both ends keep their data. */
        CHECK(munmap((char *)p + len / 2, 4096) == 0, "munmap middle");
        CHECK(p[0] == 0x5150u + round && p[len / 4 - 1] == 0x5150u + round, "ends kept");
        CHECK(munmap(p, len / 2) == 0, "munmap head");
        CHECK(munmap((char *)p + len / 2 + 4096, len / 2 - 4096) == 0, "munmap tail");
    }
    uint32_t *q = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(q != MAP_FAILED, "mmap");
    gpu_fill(vm, q, 1 << 20, 99);
    uint32_t *r = mremap(q, 1 << 20, 8 << 20, MREMAP_MAYMOVE);
    CHECK(r != MAP_FAILED && svm_owns(r), "mremap");
    check_words(r, (1 << 20) / 4, 99, 0);
    check_words(r + (1 << 20) / 4, (7 << 20) / 4, 0, 0);
    OK(gpu_store(vm, r + (4 << 20) / 4, 8, 1));
    check_words(r + (4 << 20) / 4, 8, 1, 1);
    CHECK(munmap(r, 8 << 20) == 0, "munmap");
    /* MADV_DONTNEED reads zeros after, as private anonymous memory does. */
    uint32_t *s = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(s != MAP_FAILED, "mmap");
    gpu_fill(vm, s, 1 << 20, 3);
    CHECK(madvise(s, 1 << 20, MADV_DONTNEED) == 0, "madvise");
    check_words(s, (1 << 20) / 4, 0, 0);
    CHECK(munmap(s, 1 << 20) == 0, "munmap");
    OK(svm_vm_destroy(vm));
    printf("mmap_munmap: ok\n");
    return 0;
}
