/* IGT's fork-read-after: the GPU writes a malloc'd buffer, the process
 * forks, the child reads the data back (from VRAM, through the pager) and
 * allocates memory of its own; the parent's heap is intact after. */
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

int main(void)
{
    uint32_t vm = mirror_vm();
    size_t n = (2 << 20) / 4;
    uint32_t *p = malloc(n * 4);
    CHECK(p != NULL, "malloc");
    gpu_fill(vm, p, n * 4, 0x1234);
    uint32_t *small = malloc(64);
    CHECK(small != NULL, "malloc");
    OK(gpu_store(vm, small, 16, 40));
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        check_words(p, n, 0x1234, 0);
        check_words(small, 16, 40, 1);
        /* The child's own allocations do not touch the parent's heap. */
        for (int i = 0; i < 1000; i++)
            free(malloc(100 + i));
        char *mine = malloc(1 << 20);
        CHECK(mine != NULL, "child malloc");
        memset(mine, 1, 1 << 20);
        free(small);
        CHECK(svm_vm_create_mirror(&vm) == SVM_E_FORKED, "the child uses no endpoint");
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %d", status);
    check_words(small, 16, 40, 1);
    for (int i = 0; i < 100; i++)
        free(malloc(64 + i));
    OK(gpu_store(vm, p, 8, 9));
    check_words(p, 8, 9, 1);
    free(small);
    free(p);
    OK(svm_vm_destroy(vm));
    printf("fork_read_after: ok\n");
    return 0;
}
