#include "runtime/dist.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/error.h"
#include "runtime/log.h"

#ifdef AE_WITH_MPI
// The C API only: Open MPI's deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace ae::dist {

namespace {

struct State {
  bool started = false;  // init ran
  bool mpi = false;      // MPI_Init ran here
  int rank = 0, size = 1, local_rank = 0;
};
State g;

// Device labels for announce() and the registered device all-reduces (set at device start-up).
std::map<std::string, std::string> g_device_labels;
std::map<DeviceKind, DeviceAllReduce> g_device_allreduce;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? v : nullptr;
}

// The number of ranks the launcher started, from its environment (0: not launched by one).
int launched_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = env(name)) return std::atoi(v);
  return env("PMIX_RANK") != nullptr ? 1 : 0;
}

#ifdef AE_WITH_MPI
// The watchdog: a thread that ends the process when a collective has been waiting longer than
// AE_COLLECTIVE_TIMEOUT. Collectives are MPI's blocking calls (its non-blocking ones progress only
// inside MPI_Test, which made a 48 MB all-reduce 15x slower); the watchdog never calls MPI itself
// (the process is MPI_THREAD_FUNNELED): it prints which collective stalled and exits, and mpirun
// ends the other ranks as it does for any rank that exits without MPI_Finalize.
class Watchdog {
 public:
  Watchdog() : thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void arm(const std::string& what, double seconds) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      what_ = what;
      seconds_ = seconds;
      deadline_ = deadline_after(seconds);
      armed_ = true;
    }
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
  }
  void watch(const std::string& key, const std::string& what, double seconds, std::function<bool()> finished) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      async_[key] = Async{what, seconds, deadline_after(seconds), std::move(finished)};
    }
    cv_.notify_all();
  }
  void unwatch(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);  // not while the loop is polling this one
    async_.erase(key);
  }

 private:
  using Clock = std::chrono::steady_clock;
  // Device work queued asynchronously, polled until finished (watch_async in dist.h).
  struct Async {
    std::string what;
    double seconds = 0;
    Clock::time_point deadline;
    std::function<bool()> finished;
  };
  static constexpr std::chrono::milliseconds kPoll{100};

  static Clock::time_point deadline_after(double seconds) {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

  [[noreturn]] static void stalled(const std::string& what, double seconds) {
    std::fprintf(stderr,
                 "error (rank %d of %d): %s did not complete within %g s (AE_COLLECTIVE_TIMEOUT): another rank is "
                 "stuck or far behind; ending the job\n",
                 g.rank, g.size, what.c_str(), seconds);
    std::fflush(stderr);
    std::_Exit(1);
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!quit_) {
      if (!armed_ && async_.empty()) {
        cv_.wait(lock);
        continue;
      }
      Clock::time_point wake = armed_ ? deadline_ : Clock::time_point::max();
      if (!async_.empty()) wake = std::min(wake, Clock::now() + kPoll);
      cv_.wait_until(lock, wake);
      if (quit_) break;
      const Clock::time_point now = Clock::now();
      if (armed_ && now >= deadline_) stalled(what_, seconds_);
      for (auto it = async_.begin(); it != async_.end();) {
        bool done = true;
        try {
          done = it->second.finished();
        } catch (...) {  // e.g. a CUDA error: the main thread meets it at its next call
        }
        if (done) {
          it = async_.erase(it);
        } else {
          if (now >= it->second.deadline) stalled(it->second.what, it->second.seconds);
          ++it;
        }
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::string what_;
  double seconds_ = 0;
  Clock::time_point deadline_;
  bool armed_ = false, quit_ = false;
  std::map<std::string, Async> async_;
  std::thread thread_;
};
std::unique_ptr<Watchdog> g_watchdog;

// Arms the watchdog for one collective (not for Wait::unbounded) and disarms it at scope end.
class Guard {
 public:
  Guard(const std::string& what, Wait wait) : armed_(wait == Wait::bounded && g_watchdog) {
    if (armed_) g_watchdog->arm(what, collective_timeout_seconds());
  }
  ~Guard() {
    if (armed_) g_watchdog->disarm();
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  bool armed_;
};

void check(int rc, const std::string& what, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  abort_job(what + ": " + call + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}

int count_of(int64_t n, const std::string& what) {
  AE_CHECK(n >= 0 && n <= INT_MAX, what << ": " << n << " elements do not fit one MPI call (at most " << INT_MAX << ")");
  return static_cast<int>(n);
}

template <class T>
void allreduce(T* data, int64_t n, MPI_Datatype type, const std::string& what) {
  if (g.size == 1 || n == 0) return;
  const Guard guard(what, Wait::bounded);
  check(MPI_Allreduce(MPI_IN_PLACE, data, count_of(n, what), type, MPI_SUM, MPI_COMM_WORLD), what, "MPI_Allreduce");
}
#endif

}  // namespace

void init(int* argc, char*** argv) {
  if (g.started) return;
  g.started = true;
  const int launched = launched_size();
#ifdef AE_WITH_MPI
  if (launched == 0) return;
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw Error("MPI_Init_thread failed although the process was launched by mpirun/srun");
  g.mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.size);
  MPI_Comm node;  // the ranks sharing this node's memory: the node-local rank picks the GPU
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &g.local_rank);
  MPI_Comm_free(&node);
  // The other ranks print warnings and errors; rank 0 speaks for the run.
  if (g.rank != 0 && log_level() < LogLevel::warn) set_log_level(LogLevel::warn);
  g_watchdog = std::make_unique<Watchdog>();
#else
  (void)argc;
  (void)argv;
  if (launched > 1)
    throw Error("this aesthete was built without MPI (libopenmpi-dev was not found at configure time) but was "
                "launched as " + std::to_string(launched) +
                " ranks; each would write the same files. Install libopenmpi-dev, reconfigure, or run one process");
#endif
}

void finalize() {
#ifdef AE_WITH_MPI
  if (g.mpi) {
    g_watchdog.reset();
    MPI_Finalize();
    g.mpi = false;
  }
#endif
}

bool built_with_mpi() {
#ifdef AE_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool active() { return g.mpi; }
int rank() { return g.rank; }
int size() { return g.size; }
int local_rank() { return g.local_rank; }
bool is_root() { return g.rank == 0; }

double collective_timeout_seconds() {
  const char* v = env("AE_COLLECTIVE_TIMEOUT");
  if (v == nullptr) return 900;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  AE_CHECK(end != v && *end == '\0' && s > 0, "AE_COLLECTIVE_TIMEOUT must be a number of seconds above 0, got '" << v << "'");
  return s;
}

void watch_async(const std::string& key, const std::string& what, std::function<bool()> finished) {
#ifdef AE_WITH_MPI
  if (g_watchdog) g_watchdog->watch(key, what, collective_timeout_seconds(), std::move(finished));
#else
  (void)key, (void)what, (void)finished;
#endif
}

void unwatch_async(const std::string& key) {
#ifdef AE_WITH_MPI
  if (g_watchdog) g_watchdog->unwatch(key);
#else
  (void)key;
#endif
}

void barrier(const std::string& what, Wait wait) {
#ifdef AE_WITH_MPI
  if (g.size == 1) return;
  const Guard guard(what, wait);
  check(MPI_Barrier(MPI_COMM_WORLD), what, "MPI_Barrier");
#else
  (void)what;
  (void)wait;
#endif
}

void allreduce_sum(float* data, int64_t n, const std::string& what) {
#ifdef AE_WITH_MPI
  allreduce(data, n, MPI_FLOAT, what);
#else
  (void)data, (void)n, (void)what;
#endif
}

void allreduce_sum(double* data, int64_t n, const std::string& what) {
#ifdef AE_WITH_MPI
  allreduce(data, n, MPI_DOUBLE, what);
#else
  (void)data, (void)n, (void)what;
#endif
}

void broadcast(void* data, int64_t bytes, int root, const std::string& what) {
  AE_CHECK(root >= 0 && root < g.size, what << ": broadcast root " << root << " is not a rank of " << g.size);
#ifdef AE_WITH_MPI
  if (g.size == 1 || bytes == 0) return;
  const Guard guard(what, Wait::bounded);
  check(MPI_Bcast(data, count_of(bytes, what), MPI_BYTE, root, MPI_COMM_WORLD), what, "MPI_Bcast");
#else
  (void)data, (void)bytes;
#endif
}

std::vector<std::string> gather_to_root(const std::string& mine, const std::string& what, Wait wait) {
  if (g.size == 1) return {mine};
#ifdef AE_WITH_MPI
  // Sizes first, then the bytes at their offsets (MPI_Gatherv).
  int n = count_of(static_cast<int64_t>(mine.size()), what);
  std::vector<int> sizes(static_cast<std::size_t>(g.size)), offsets(static_cast<std::size_t>(g.size));
  const Guard guard(what, wait);
  check(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), what, "MPI_Gather");
  int64_t total = 0;
  for (int r = 0; r < g.size; ++r) {
    offsets[static_cast<std::size_t>(r)] = static_cast<int>(total);
    total += sizes[static_cast<std::size_t>(r)];
  }
  if (g.rank == 0) count_of(total, what);
  std::string all(static_cast<std::size_t>(g.rank == 0 ? total : 0), '\0');
  check(MPI_Gatherv(mine.data(), n, MPI_BYTE, all.data(), sizes.data(), offsets.data(), MPI_BYTE, 0, MPI_COMM_WORLD),
        what, "MPI_Gatherv");
  std::vector<std::string> out;
  if (g.rank == 0)
    for (int r = 0; r < g.size; ++r)
      out.push_back(all.substr(static_cast<std::size_t>(offsets[static_cast<std::size_t>(r)]),
                               static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)])));
  return out;
#else
  (void)what, (void)wait;
  return {mine};
#endif
}

void set_device_label(const std::string& device, const std::string& label) { g_device_labels[device] = label; }

int choose_device(int requested, bool launched, int local_rank, int device_count) {
  AE_CHECK(device_count >= 1, "choose_device: no devices to choose from");
  if (requested >= 0) {
    AE_CHECK(requested < device_count,
             "device cuda:" << requested << " was requested but this process sees " << device_count
                            << (device_count == 1 ? " CUDA device" : " CUDA devices") << " (cuda:0.." << device_count - 1
                            << "; CUDA_VISIBLE_DEVICES may hide the others)");
    return requested;
  }
  if (!launched) return 0;
  AE_CHECK(local_rank >= 0, "choose_device: node-local rank " << local_rank << " is negative");
  return local_rank % device_count;
}

void set_device_allreduce(DeviceKind kind, DeviceAllReduce reducer) { g_device_allreduce[kind] = std::move(reducer); }

const DeviceAllReduce* device_allreduce(DeviceKind kind) {
  const auto it = g_device_allreduce.find(kind);
  return it == g_device_allreduce.end() || !it->second.sum ? nullptr : &it->second;
}

void announce(const std::string& device) {
  if (!g.mpi) return;
  const auto label = g_device_labels.find(device);
  const std::string mine = label == g_device_labels.end() ? device : device + " (" + label->second + ")";
  const std::vector<std::string> devices = gather_to_root(mine, "start-up (device names)");
  if (g.rank != 0) return;
  std::string line = "aesthete: " + std::to_string(g.size) + (g.size == 1 ? " rank" : " ranks") + " (MPI):";
  for (int r = 0; r < g.size; ++r)
    line += (r ? ", rank " : " rank ") + std::to_string(r) + " " + devices[static_cast<std::size_t>(r)];
  std::fprintf(stderr, "%s\n", line.c_str());
}

void abort_job(const std::string& message, int code) {
  std::fprintf(stderr, "error (rank %d of %d): %s\n", g.rank, g.size, message.c_str());
  std::fflush(stderr);
#ifdef AE_WITH_MPI
  if (g.mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace ae::dist
