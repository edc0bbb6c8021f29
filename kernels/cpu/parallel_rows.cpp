#include "kernels/cpu/parallel_rows.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ae::cpu {
namespace {

// Workers 1..parts-1 of a job; the calling thread is part 0. One job at a time (busy_).
class SleepingPool {
 public:
  explicit SleepingPool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  // Never destroyed (see pool()): workers simply stay asleep until the process exits.
  SleepingPool(const SleepingPool&) = delete;
  SleepingPool& operator=(const SleepingPool&) = delete;

  int threads() const { return threads_; }

  // False when another thread's job is running; the caller then runs its loop inline.
  bool try_run(int parts, int64_t count, const std::function<void(int64_t, int64_t)>& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
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

  void work(int index) {
    uint64_t seen = 0;
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

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the thread whose job is running
  std::mutex mutex_;  // guards the job fields below
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
  static SleepingPool* p = new SleepingPool(omp_get_max_threads());
  return *p;
}

}  // namespace

void parallel_rows(int64_t count, int64_t min_rows_per_thread, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  const int64_t by_size = count / std::max<int64_t>(1, min_rows_per_thread);
  if (by_size >= 2) {
    SleepingPool& p = pool();
    const int parts = static_cast<int>(std::min<int64_t>(p.threads(), by_size));
    if (parts >= 2 && p.try_run(parts, count, body)) return;
  }
  body(0, count);
}

}  // namespace ae::cpu
