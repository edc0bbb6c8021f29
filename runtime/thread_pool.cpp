#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

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

// Workers 1..parts-1 of a job; the calling thread is part 0. One job at a time (busy_).
class SleepingPool {
 public:
  SleepingPool() = default;
  // Never destroyed (see pool()): workers simply stay asleep until the process exits.
  SleepingPool(const SleepingPool&) = delete;
  SleepingPool& operator=(const SleepingPool&) = delete;

  // False when another thread's job is running; the caller then runs its loop inline.
  bool try_run(int parts, int64_t count, const std::function<void(int64_t, int64_t)>& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Grow to parts-1 workers. A new worker starts from the current generation, so it
      // waits for the job published below rather than replaying an old one.
      while (static_cast<int>(workers_.size()) < parts - 1) {
        const int index = static_cast<int>(workers_.size()) + 1;
        workers_.emplace_back([this, index, seen = generation_] { work(index, seen); });
      }
      body_ = &body;
      count_ = count;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    run_part(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    body_ = nullptr;
    return true;
  }

 private:
  void run_part(int part) const {
    const int64_t begin = count_ * part / parts_, end = count_ * (part + 1) / parts_;
    if (begin < end) (*body_)(begin, end);
  }

  void work(int index, uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= parts_) continue;  // this job uses fewer threads
      lock.unlock();
      run_part(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the thread whose job is running
  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  int parts_ = 1;
  int pending_ = 0;
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
  const int parts = static_cast<int>(std::min<int64_t>(thread_count(), by_size));
  if (parts >= 2 && pool().try_run(parts, count, body)) return;
  body(0, count);
}

}  // namespace ae
