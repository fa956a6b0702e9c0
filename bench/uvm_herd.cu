// The herd on NVIDIA UVM, for `svm bench --uvm` (issue 15): the same
// workload as `svm run herd`, on a managed buffer.
//
//   1. the CPU writes word i = i over the whole buffer;
//   2. GPU phase (timed): a kernel adds 1 to the first word of every 4 KiB
//      page (touch-pg) or to every word (inc-all); UVM migrates the pages
//      to the GPU on its faults;
//   3. CPU phase (timed): N threads read every page, thread t starting at
//      page t * pages / N and wrapping around, the first word of each page
//      (and the last, in inc-all); UVM migrates the pages back;
//   4. untimed: every word of every page is checked.
// Each configuration runs REPS times (a fresh buffer each); the phases'
// medians are printed as one JSON line with the fields `svm run herd
// --json` prints, plus "impl":"uvm". Exit status 1 if any word was wrong.
//
//   nvcc -O2 -arch=sm_90 -o uvm_herd uvm_herd.cu
//   uvm_herd                                 # 2 MiB and 64 MiB, both modes, 1..16 threads
//   uvm_herd SIZE_KiB THREADS touch|inc-all [REPS]   # one configuration
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kWordsPerPage = 4096 / sizeof(uint32_t);

bool cuda_ok(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    fprintf(stderr, "uvm_herd: %s: %s\n", what, cudaGetErrorString(e));
    return false;
  }
  return true;
}

double now_us() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// One thread per page: the page's first word += 1.
__global__ void add_to_first_words(uint32_t *buf, size_t pages) {
  size_t page = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (page < pages) buf[page * kWordsPerPage] += 1;
}

// Every word += 1, grid-stride.
__global__ void add_to_every_word(uint32_t *buf, size_t words) {
  size_t step = (size_t)gridDim.x * blockDim.x;
  for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < words; w += step) {
    buf[w] += 1;
  }
}

// The value of word w after the GPU phase.
uint32_t expected(bool inc_all, size_t w) {
  bool touched = inc_all || w % kWordsPerPage == 0;
  return (uint32_t)w + (touched ? 1u : 0u);
}

struct Rep {
  double gpu_us, cpu_us;
  long bad_pages;
};

// The CPU phase: `threads` readers from staggered starts; wrong words read.
long cpu_phase(const volatile uint32_t *buf, size_t pages, int threads, bool inc_all) {
  std::atomic<long> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < threads; t++) {
    readers.emplace_back([=, &wrong] {
      long mine = 0;
      size_t first = (size_t)t * pages / (size_t)threads;
      for (size_t k = 0; k < pages; k++) {
        size_t w = (first + k) % pages * kWordsPerPage;
        if (buf[w] != expected(inc_all, w)) mine++;
        if (inc_all && buf[w + kWordsPerPage - 1] != expected(inc_all, w + kWordsPerPage - 1)) {
          mine++;
        }
      }
      wrong += mine;
    });
  }
  for (auto &r : readers) r.join();
  return wrong.load();
}

bool one_rep(size_t bytes, int threads, bool inc_all, Rep *out) {
  size_t words = bytes / sizeof(uint32_t), pages = bytes / 4096;
  uint32_t *buf = nullptr;
  if (!cuda_ok(cudaMallocManaged(&buf, bytes), "cudaMallocManaged")) return false;
  for (size_t w = 0; w < words; w++) buf[w] = (uint32_t)w;
  double t0 = now_us();
  if (inc_all) {
    add_to_every_word<<<1024, 256>>>(buf, words);
  } else {
    add_to_first_words<<<(unsigned)((pages + 255) / 256), 256>>>(buf, pages);
  }
  bool ok = cuda_ok(cudaGetLastError(), "kernel launch") &&
            cuda_ok(cudaDeviceSynchronize(), "kernel");
  double t1 = now_us();
  long wrong = ok ? cpu_phase(buf, pages, threads, inc_all) : 0;
  double t2 = now_us();
  long bad_pages = 0;
  for (size_t p = 0; ok && p < pages; p++) {
    bool good = true;
    for (size_t i = 0; i < kWordsPerPage; i++) {
      size_t w = p * kWordsPerPage + i;
      if (buf[w] != expected(inc_all, w)) good = false;
    }
    if (!good) bad_pages++;
  }
  // A wrong read in the timed phase counts even if the page reads right now.
  if (bad_pages == 0 && wrong > 0) bad_pages = 1;
  ok = cuda_ok(cudaFree(buf), "cudaFree") && ok;
  *out = {t1 - t0, t2 - t1, bad_pages};
  return ok;
}

// Runs one configuration and prints its line; false on a CUDA error.
bool configuration(size_t kib, int threads, bool inc_all, int reps, long *bad) {
  size_t bytes = kib * 1024;
  std::vector<double> gpu, cpu;
  long bad_pages = 0;
  for (int r = 0; r < reps; r++) {
    Rep rep;
    if (!one_rep(bytes, threads, inc_all, &rep)) return false;
    gpu.push_back(rep.gpu_us);
    cpu.push_back(rep.cpu_us);
    bad_pages += rep.bad_pages;
  }
  double cpu_med = median(cpu);
  printf("{\"impl\":\"uvm\",\"mode\":\"%s\",\"size_kib\":%zu,\"threads\":%d,"
         "\"per_page_cpu_us\":%.4f,\"cpu_phase_med_us\":%.1f,\"gpu_phase_med_us\":%.1f,"
         "\"bad\":%ld,\"reps\":%d}\n",
         inc_all ? "inc-all" : "touch-pg", kib, threads, cpu_med / (double)(bytes / 4096),
         cpu_med, median(gpu), bad_pages, reps);
  fflush(stdout);
  *bad += bad_pages;
  return true;
}

// Managed memory beyond what the card has free can hang the GPU: refuse.
bool fits(size_t kib) {
  size_t free_b = 0, total_b = 0;
  if (!cuda_ok(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo")) return false;
  if (kib * 1024 > free_b / 2) {
    fprintf(stderr, "uvm_herd: %zu KiB is more than half the GPU's free memory\n", kib);
    return false;
  }
  return true;
}

void describe_device() {
  int dev = 0, pageable = 0, concurrent = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    return;
  }
  cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev);
  cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, dev);
  printf("# uvm_herd on %s, pageableMemoryAccess=%d concurrentManagedAccess=%d\n", prop.name,
         pageable, concurrent);
}

}  // namespace

int main(int argc, char **argv) {
  long bad = 0;
  if (argc >= 4) {
    long kib = strtol(argv[1], nullptr, 10), threads = strtol(argv[2], nullptr, 10);
    long reps = argc >= 5 ? strtol(argv[4], nullptr, 10) : 5;
    bool inc_all = strcmp(argv[3], "inc-all") == 0;
    bool mode_ok = inc_all || strcmp(argv[3], "touch") == 0 || strcmp(argv[3], "touch-pg") == 0;
    if (kib <= 0 || kib % 4 != 0 || threads < 1 || threads > 1024 || reps < 1 || reps > 1000 ||
        !mode_ok) {
      fprintf(stderr, "usage: uvm_herd [SIZE_KiB THREADS touch|inc-all [REPS]]\n");
      return 2;
    }
    if (!fits((size_t)kib)) return 2;
    describe_device();
    if (!configuration((size_t)kib, (int)threads, inc_all, (int)reps, &bad)) return 3;
    return bad ? 1 : 0;
  }
  if (argc != 1) {
    fprintf(stderr, "usage: uvm_herd [SIZE_KiB THREADS touch|inc-all [REPS]]\n");
    return 2;
  }
  describe_device();
  const size_t sizes[] = {2048, 65536};
  const int thread_counts[] = {1, 2, 4, 8, 16};
  for (size_t kib : sizes) {
    if (!fits(kib)) return 2;
    for (int inc_all = 0; inc_all < 2; inc_all++) {
      for (int t : thread_counts) {
        if (!configuration(kib, t, inc_all != 0, 5, &bad)) return 3;
      }
    }
  }
  return bad ? 1 : 0;
}
