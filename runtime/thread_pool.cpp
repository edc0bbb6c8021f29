#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include <strings.h>  // strcasecmp (POSIX)

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "runtime/error.h"

namespace ae {
namespace {

int default_thread_count() {
  // OMP_NUM_THREADS may be a list ("4,2" for nested levels): its first number is the top level.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && n >= 1) return static_cast<int>(std::min<long>(n, kMaxThreads));
  }
  return static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, kMaxThreads));
}

std::atomic<int>& requested_threads() {
  static std::atomic<int> n{default_thread_count()};
  return n;
}

// How long a thread that has run out of work polls for the next job (a worker) or for the last
// chunks of its own job (the caller) before it sleeps on a condition variable. A batch-1 forward
// issues a parallel loop every ~100 microseconds; waking a sleeping worker costs futex calls and a
// scheduler round trip each time (perf on the 2-core dev VM: ~9 % of a batch-1 forward's cycles in
// futex, try_to_wake_up and finish_task_switch), and the worker then starts late. Measured there
// (batch-1 forward, images/s, 2 threads): alone 50-51 without polling, 52-55 with 20 us, 53-54 with
// 50 us; two such processes at once on the 2 cores (oversubscribed), 27-28 each without polling or
// with 20 us, 26 with 50 us. Hence 20 us: an idle process still sleeps within a fraction of a
// millisecond. OMP_WAIT_POLICY=passive (the variable OpenMP programs honour) turns polling off.
constexpr int kSpinMicroseconds = 20;

std::chrono::nanoseconds spin_budget() {
  static const std::chrono::nanoseconds budget = [] {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    if (policy != nullptr && strcasecmp(policy, "passive") == 0) return std::chrono::nanoseconds(0);
    return std::chrono::nanoseconds(std::chrono::microseconds(kSpinMicroseconds));
  }();
  return budget;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls ready() for up to spin_budget(); true when it became true.
template <typename Ready>
bool spin_until(Ready&& ready) {
  const auto budget = spin_budget();
  if (budget.count() == 0) return ready();
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() - start >= budget) return ready();
  }
}

// A job's rows are cut into a few chunks per thread, and every participant (the caller and the
// woken workers) claims chunks until none are left. So a worker that the OS has not scheduled
// yet (a busy machine) simply gets fewer chunks, or none: the caller never waits for a thread
// that has not started, only for chunks already being worked on.
constexpr int64_t kChunksPerThread = 4;

// The claim word: job generation (32 bits) | chunk count (16) | next unclaimed chunk (16).
// Holding the generation and the count in the same word as the cursor makes a claim by a late
// worker from an older job fail atomically instead of running a chunk of the wrong job.
struct Claim {
  static constexpr uint64_t kMaxChunks = 0xFFFF;
  static uint64_t pack(uint32_t generation, uint64_t chunks) { return uint64_t(generation) << 32 | chunks << 16; }
  static uint32_t generation(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
  static int64_t chunks(uint64_t word) { return static_cast<int64_t>((word >> 16) & kMaxChunks); }
  static int64_t next(uint64_t word) { return static_cast<int64_t>(word & kMaxChunks); }
};

// Workers 1..threads-1 of a job; the calling thread takes part too. One job at a time (busy_).
class SleepingPool {
 public:
  SleepingPool() = default;
  // Never destroyed (see pool()): workers simply stay asleep until the process exits.
  SleepingPool(const SleepingPool&) = delete;
  SleepingPool& operator=(const SleepingPool&) = delete;

  // False when another thread's job is running; the caller then runs its loop inline.
  bool try_run(int threads, int64_t chunks, int64_t count, const std::function<void(int64_t, int64_t)>& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    uint32_t generation = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Grow to threads-1 workers. A new worker starts from the current generation, so it
      // waits for the job published below rather than replaying an old one.
      while (static_cast<int>(workers_.size()) < threads - 1) {
        const int index = static_cast<int>(workers_.size()) + 1;
        workers_.emplace_back(
            [this, index, seen = generation_.load(std::memory_order_relaxed)] { work(index, seen); });
      }
      // No chunk of the previous job is running (its caller waited for all of them), so
      // these fields are free to change; the release store of claim_ publishes them.
      body_ = &body;
      count_ = count;
      done_chunks_.store(0, std::memory_order_relaxed);
      threads_.store(threads, std::memory_order_relaxed);
      claim_.store(Claim::pack(generation_.load(std::memory_order_relaxed) + 1, static_cast<uint64_t>(chunks)),
                   std::memory_order_release);
      // Spinning workers see the job from here on; sleeping ones when notified below.
      generation = generation_.fetch_add(1, std::memory_order_release) + 1;
    }
    wake_.notify_all();  // no system call when every worker is still spinning
    run_chunks(generation);
    const auto all_done = [&] { return done_chunks_.load(std::memory_order_acquire) == chunks; };
    if (!spin_until(all_done)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, all_done);
    }
    return true;
  }

 private:
  // Claims and runs chunks of job `generation` until none are left (or a newer job started).
  void run_chunks(uint32_t generation) {
    uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      if (Claim::generation(word) != generation || Claim::next(word) >= Claim::chunks(word)) return;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        continue;  // `word` now holds the current value: re-check it
      }
      // The claimed chunk keeps this job (and body_, count_) alive until it is counted done.
      const int64_t chunk = Claim::next(word), chunks = Claim::chunks(word);
      const int64_t begin = count_ * chunk / chunks, end = count_ * (chunk + 1) / chunks;
      if (begin < end) (*body_)(begin, end);
      if (done_chunks_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller checks its predicate under mutex_
        done_.notify_one();
      }
      word = claim_.load(std::memory_order_acquire);
    }
  }

  void work(int index, uint32_t seen) {
    const auto new_job = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    for (;;) {
      if (!spin_until(new_job)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, new_job);  // the caller bumps generation_ under mutex_: no lost wake-up
      }
      seen = generation_.load(std::memory_order_acquire);
      // threads_ may already belong to a newer job than `seen`: then run_chunks finds the
      // generation changed and returns, and the next round picks that job up.
      if (index >= threads_.load(std::memory_order_relaxed)) continue;  // this job uses fewer threads
      run_chunks(seen);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the thread whose job is running
  std::mutex mutex_;  // held while a job is published, and by the sleeping/waking below
  std::condition_variable wake_, done_;
  std::atomic<uint32_t> generation_{0};  // changed under mutex_; read by spinning workers without it
  std::atomic<int> threads_{1};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_chunks_{0};
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
};

SleepingPool& pool() {
  // Leaked on purpose: joining sleeping workers during static destruction buys nothing and
  // would order this pool's teardown against other statics.
  static SleepingPool* p = new SleepingPool();
  return *p;
}

}  // namespace

int thread_count() { return requested_threads().load(std::memory_order_relaxed); }

void set_thread_count(int threads) {
  AE_CHECK(threads >= 1 && threads <= kMaxThreads,
           "set_thread_count: threads must be in [1, " << kMaxThreads << "], got " << threads);
  requested_threads().store(threads, std::memory_order_relaxed);
}

void parallel_rows(int64_t count, int64_t min_rows_per_thread, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  const int64_t by_size = count / std::max<int64_t>(1, min_rows_per_thread);
  const int threads = static_cast<int>(std::min<int64_t>(thread_count(), by_size));
  if (threads >= 2) {
    const int64_t chunks = std::min<int64_t>(by_size, threads * kChunksPerThread);
    if (pool().try_run(threads, chunks, count, body)) return;
  }
  body(0, count);
}

}  // namespace ae
