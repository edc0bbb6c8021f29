// runtime/dist.h under mpirun: the collectives give the sums and bytes they must, and a rank that
// dies or stalls ends the job with a clear error instead of hanging it.
#include <doctest/doctest.h>

#include <chrono>

#include "tests/mpi/mpi_run.h"
#include "tests/support/run_command.h"

using namespace ae;

namespace {

bool skipped() {
  const std::string why = test::mpi_unavailable();
  if (why.empty()) return false;
  test::skip_binary(why);
  return true;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("one process without mpirun is rank 0 of 1 and its collectives return their input") {
  const auto r = test::run_command(std::string(AE_DIST_PROBE) + " collectives");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "probe ok: 1 ranks, local rank 0, mpi 0\n");
}

TEST_CASE("two ranks: all-reduce, broadcast, gather and barrier") {
  if (skipped()) return;
  const auto r = test::run_command(test::mpirun(2, std::string(AE_DIST_PROBE) + " collectives"));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "probe ok: 2 ranks, local rank 0, mpi 1\n");
}

TEST_CASE("a rank that dies ends the job: mpirun stops the rank waiting in the barrier") {
  if (skipped()) return;
  const auto t0 = std::chrono::steady_clock::now();
  // The timeout is far away: what ends rank 0 here is mpirun noticing rank 1's death.
  const auto r = test::run_command("AE_COLLECTIVE_TIMEOUT=600 " + test::mpirun(2, std::string(AE_DIST_PROBE) + " die"));
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.out.find("passed the barrier") == std::string::npos);
  CHECK(seconds_since(t0) < 30);
}

TEST_CASE("a rank that stalls: the others' collective times out naming itself and the job ends") {
  if (skipped()) return;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = test::run_command("AE_COLLECTIVE_TIMEOUT=2 " + test::mpirun(2, std::string(AE_DIST_PROBE) + " stall"));
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("error (rank 0 of 2): probe: barrier after rank 1 stalls did not complete within 2 s "
                   "(AE_COLLECTIVE_TIMEOUT)") != std::string::npos);
  CHECK(r.out.find("passed the barrier") == std::string::npos);
  CHECK(seconds_since(t0) < 30);  // rank 1 would sleep 60 s: MPI_Abort ended it too
}

TEST_CASE("device work that never finishes: the watchdog ends the job naming it (the NCCL stall)") {
  if (skipped()) return;
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 0 waits without a bound; rank 1 sleeps 60 s and never calls MPI: only rank 1's watchdog,
  // polling the stuck work, can end the job.
  const auto r =
      test::run_command("AE_COLLECTIVE_TIMEOUT=2 " + test::mpirun(2, std::string(AE_DIST_PROBE) + " async-stall"));
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("error (rank 1 of 2): probe: gradient all-reduce, step 3 (queued on the GPU) did not complete "
                   "within 2 s (AE_COLLECTIVE_TIMEOUT)") != std::string::npos);
  CHECK(r.out.find("passed the barrier") == std::string::npos);
  CHECK(seconds_since(t0) < 30);
}

TEST_CASE("watched device work that finishes, is replaced or is dropped does not end the job") {
  if (skipped()) return;
  const auto r =
      test::run_command("AE_COLLECTIVE_TIMEOUT=1 " + test::mpirun(2, std::string(AE_DIST_PROBE) + " async-done"));
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("probe: async ok") != std::string::npos);
  CHECK(r.err.find("did not complete") == std::string::npos);
}
