/* svm.h: xe-svm for C programs (libsvm.so). See docs/c-api.md.
 *
 * Every call returns SVM_OK (0) or a negative svm_status. Nothing in the
 * library aborts the process: a bug caught at the boundary is
 * SVM_E_INTERNAL. Under `svm exec` (or linked with -lsvm and started by
 * it) the library is connected at load time, and malloc, calloc, realloc,
 * free, posix_memalign, aligned_alloc, memalign, valloc and anonymous
 * mmap/munmap/mremap are served from pager memory: a mirror VM reaches
 * every such pointer at its own address.
 */
#ifndef SVM_H
#define SVM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum svm_status {
    SVM_OK = 0,
    SVM_E_NOT_CONNECTED = -1,
    SVM_E_INVALID = -2,
    SVM_E_NO_MEMORY = -3,
    SVM_E_OVER_BUDGET = -4,
    SVM_E_NOT_FOUND = -5,
    SVM_E_TIMEOUT = -6,
    SVM_E_JOB_FAULTED = -7,
    SVM_E_JOB_FAILED = -8,
    SVM_E_SERVER = -9,
    SVM_E_TRANSPORT = -10,
    SVM_E_FORKED = -11,
    SVM_E_NOT_SUPPORTED = -12,
    SVM_E_INTERNAL = -13,
    SVM_E_DENIED = -14
} svm_status;

/* Built-in kernels (svm_submit_kernel). */
enum svm_kernel {
    SVM_KERNEL_TOUCH_PAGES = 1,
    SVM_KERNEL_INCREMENT_ALL = 2,
    SVM_KERNEL_STRIDED_WRITE = 3,
    SVM_KERNEL_RANDOM_READ = 4,
    SVM_KERNEL_ATOMIC_ADD = 5
};

/* Advice (svm_advise). */
enum svm_advice {
    SVM_ADVICE_DEFAULT = 0,
    SVM_ADVICE_PREFER_SYSTEM = 1,
    SVM_ADVICE_PREFER_DEVICE = 2,
    SVM_ADVICE_ATOMIC_DEVICE = 3,
    /* GPU atomics wherever the pages are (system memory too). */
    SVM_ADVICE_ATOMIC_GLOBAL = 4,
    /* GPU atomics refused: a GPU atomic there ends its job Faulted. */
    SVM_ADVICE_ATOMIC_CPU = 5,
    /* The pages live in VRAM: a CPU access to one there gets SIGBUS. */
    SVM_ADVICE_DEVICE_ONLY = 6,
    /* Every GPU maps the pages where they are, a peer GPU's VRAM included
       (through its peer window): no migration on a GPU fault. */
    SVM_ADVICE_ACCESS_IN_PLACE = 7,
    /* GPU k's VRAM: SVM_ADVICE_PREFER_GPU0 + k (k < 8). GPU k's faults and
       prefetches move the pages there; other GPUs map them in place. */
    SVM_ADVICE_PREFER_GPU0 = 8
};

/* Locations (svm_prefetch) and page states (svm_page_states). */
enum svm_location { SVM_LOCATION_SYSTEM = 1, SVM_LOCATION_DEVICE = 2 };
enum svm_page_state {
    SVM_PAGE_EMPTY = 0,
    SVM_PAGE_SYSTEM = 1,
    SVM_PAGE_DEVICE = 2,
    SVM_PAGE_MIGRATING = 3
};

/* Job statuses (svm_job_result_t.status). */
enum svm_job_status {
    SVM_JOB_COMPLETED = 1,
    SVM_JOB_FAULTED = 2,
    SVM_JOB_RUNNING = 3,
    SVM_JOB_BAD_COMMAND = 4,
    SVM_JOB_HUNG = 5
};

typedef struct svm_job_result {
    uint32_t status;     /* enum svm_job_status */
    uint64_t faults;     /* GPU page faults the job took */
    uint64_t elapsed_us;
} svm_job_result_t;

typedef struct svm_gpu_stats {
    uint64_t vram_total;
    uint64_t vram_used;
    uint64_t gpu_faults;
    uint64_t pages_to_vram;
    uint64_t pages_to_ram; /* migrations back to system memory */
    uint64_t invalidations;
} svm_gpu_stats_t;

/* One GPU fault that could not be served (svm_fault_log). */
typedef struct svm_fault_record {
    uint64_t address;    /* the faulting GPU address, page-aligned */
    uint32_t access;     /* 0 read, 1 write, 2 atomic */
    uint32_t fault_type; /* 0 not present, 1 write violation, 2 atomic */
    uint32_t level;      /* the page-table level where the walk failed */
    uint64_t time_us;    /* microseconds since the GPU server started */
} svm_fault_record_t;

typedef struct svm_pager_totals {
    uint64_t objects;
    uint64_t object_bytes;
    uint64_t views;
    uint64_t spaces;
} svm_pager_totals_t;

/* Connection. The library connects when it is loaded; svm_connect tries
 * again (SVM_GPU_FD / SVM_PAGER_FD name the endpoints). */
int svm_connect(void);
int svm_connected(void);                 /* 1 or 0 */
int svm_owns(const void *addr);          /* 1: pager memory of this process */
const char *svm_strerror(int status);

/* GPU VMs that mirror this process's pager memory at the same addresses
 * (now and as the heap grows). */
int svm_vm_create_mirror(uint32_t *vm);
int svm_vm_destroy(uint32_t vm);

/* Work. A batch buffer is MI instructions at any GPU-reachable address
 * (4-byte aligned); fence (8-byte aligned, or NULL) gets fence_value when
 * the batch ends. svm_wait fills *result (may be NULL) and returns
 * SVM_E_JOB_FAULTED / SVM_E_JOB_FAILED / SVM_E_TIMEOUT for jobs that did
 * not complete. */
int svm_submit_batch(uint32_t vm, const void *batch, uint64_t *fence,
                     uint64_t fence_value, uint64_t *job);
int svm_submit_kernel(uint32_t vm, uint32_t kernel, void *addr, uint64_t len,
                      uint64_t stride, uint32_t value, uint32_t threads,
                      uint64_t *job);
int svm_wait(uint64_t job, uint32_t timeout_ms, svm_job_result_t *result);

/* Memory. Ranges must lie in pager memory (one region). */
int svm_advise(const void *addr, size_t len, uint32_t advice);
int svm_prefetch(const void *addr, size_t len, uint32_t location);
int svm_discard(void *addr, size_t len); /* whole pages: read zeros next */
int svm_page_states(const void *addr, size_t pages, uint8_t *states);
int svm_gpu_stats(svm_gpu_stats_t *stats);
/* The VM's last unserved GPU faults (the server keeps 64), oldest first:
 * up to max into out, *count of them copied, *total (may be NULL) of all. */
int svm_fault_log(uint32_t vm, svm_fault_record_t *out, size_t max,
                  size_t *count, uint64_t *total);
int svm_pager_totals(svm_pager_totals_t *totals);

/* Batch encoding: each writes its instruction's dwords to out (room for
 * cap) and returns how many, or 0 when they do not fit. */
size_t svm_batch_store_dword(uint32_t *out, size_t cap, uint64_t addr, uint32_t value);
size_t svm_batch_store_qword(uint32_t *out, size_t cap, uint64_t addr, uint64_t value);
size_t svm_batch_atomic_add(uint32_t *out, size_t cap, uint64_t addr, uint32_t value);
size_t svm_batch_end(uint32_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* SVM_H */
