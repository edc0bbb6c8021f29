// A small program for tests/mpi/test_mpi_dist.cpp, run under mpirun: exercises runtime/dist.h's
// collectives and what happens when a rank dies or stalls. Prints "probe ok" from rank 0 when
// every check passed; any failure ends the job with a message.
//   dist_probe collectives   all-reduce (float, double), broadcast, gather, barrier
//   dist_probe die           rank 1 exits at once (no MPI_Finalize); the others wait in a barrier
//   dist_probe stall         rank 1 sleeps 60 s; the others wait in a barrier (AE_COLLECTIVE_TIMEOUT)
//   dist_probe async-stall   rank 1 watches device work that never finishes (watch_async) and
//                            sleeps 60 s without calling MPI: its watchdog must end the job
//   dist_probe async-done    watches that finish, are replaced or are dropped never end the job
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "runtime/dist.h"

namespace {

void expect(bool ok, const std::string& what) {
  if (!ok) ae::dist::abort_job("probe: " + what);
}

void collectives() {
  using namespace ae::dist;
  const int r = rank(), n = size();
  std::vector<float> f = {1.0f, static_cast<float>(r), 0.5f};
  allreduce_sum(f.data(), static_cast<int64_t>(f.size()), "probe: float all-reduce");
  expect(f[0] == static_cast<float>(n) && f[1] == static_cast<float>(n * (n - 1) / 2) && f[2] == 0.5f * n,
         "float all-reduce gave " + std::to_string(f[0]) + " " + std::to_string(f[1]) + " " + std::to_string(f[2]));
  std::vector<double> d = {1e-17 * (r + 1), 3.0};
  allreduce_sum(d.data(), 2, "probe: double all-reduce");
  expect(d[1] == 3.0 * n, "double all-reduce gave " + std::to_string(d[1]));
  char text[32] = {};
  if (r == n - 1) std::snprintf(text, sizeof text, "from %d", r);
  broadcast(text, sizeof text, n - 1, "probe: broadcast");
  expect(std::string(text) == "from " + std::to_string(n - 1), "broadcast gave '" + std::string(text) + "'");
  const std::vector<std::string> all = gather_to_root(std::string(static_cast<std::size_t>(r), 'x') + "|", "probe: gather");
  if (r == 0) {
    expect(static_cast<int>(all.size()) == n, "gather gave " + std::to_string(all.size()) + " parts");
    for (int i = 0; i < n; ++i)
      expect(all[static_cast<std::size_t>(i)] == std::string(static_cast<std::size_t>(i), 'x') + "|",
             "gather part " + std::to_string(i) + " is '" + all[static_cast<std::size_t>(i)] + "'");
  } else {
    expect(all.empty(), "gather gave parts to a rank other than 0");
  }
  barrier("probe: barrier");
  if (r == 0)
    std::printf("probe ok: %d ranks, local rank %d, mpi %d\n", n, local_rank(), active() ? 1 : 0);
}

// Watches of asynchronous work (runtime/dist.h watch_async) that must not end the job: one that
// finishes after a while, one replaced by a finished one under the same key, one dropped; the
// timeout (AE_COLLECTIVE_TIMEOUT, 1 s in the test) passes meanwhile.
void async_done() {
  using namespace ae::dist;
  std::atomic<bool> later{false};
  watch_async("a", "probe: work that finishes after 0.3 s", [&] { return later.load(); });
  watch_async("b", "probe: work that never finishes, replaced", [] { return false; });
  watch_async("b", "probe: work already finished", [] { return true; });
  watch_async("c", "probe: work that never finishes, dropped", [] { return false; });
  unwatch_async("c");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  later = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  unwatch_async("a");  // `later` goes out of scope
  barrier("probe: barrier after the watches");
  if (rank() == 0) std::printf("probe: async ok\n");
}

}  // namespace

int main(int argc, char** argv) {
  ae::dist::init(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "collectives";
  if (mode == "collectives") {
    collectives();
  } else if (mode == "die" || mode == "stall") {
    if (ae::dist::rank() == 1) {
      if (mode == "die") std::_Exit(3);
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
    ae::dist::barrier("probe: barrier after rank 1 " + mode + "s");
    std::printf("probe: rank %d passed the barrier\n", ae::dist::rank());
  } else if (mode == "async-stall") {
    if (ae::dist::rank() == 1) {
      ae::dist::watch_async("gpu", "probe: gradient all-reduce, step 3 (queued on the GPU)", [] { return false; });
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
    ae::dist::barrier("probe: barrier after rank 1's stuck device work", ae::dist::Wait::unbounded);
    std::printf("probe: rank %d passed the barrier\n", ae::dist::rank());
  } else if (mode == "async-done") {
    async_done();
  } else {
    std::fprintf(stderr, "dist_probe: unknown mode '%s' (collectives, die, stall, async-stall, async-done)\n",
                 mode.c_str());
    return 2;
  }
  ae::dist::finalize();
  return 0;
}
