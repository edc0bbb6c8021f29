// The GPU all-reduce's flat gradient buffer (kernels/cuda/nccl_grads.h) across two ranks, on the
// emulated device with MPI as the collective (tests/mpi/flat_grads_probe.cpp): every rank's
// gradients of several shapes are summed exactly, twice with one buffer, and every rank's device
// is named at start-up. Skipped without MPI or without the emulated device.
#include <doctest/doctest.h>

#include "tests/mpi/mpi_run.h"
#include "tests/support/run_command.h"

using namespace ae;

namespace {

bool skipped() {
  if (std::string(AE_FLAT_GRADS_PROBE).empty()) {
    test::skip_binary("this build has no emulated device (AE_EMULATED_DEVICE=OFF)");
    return true;
  }
  const std::string why = test::mpi_unavailable();
  if (why.empty()) return false;
  test::skip_binary(why);
  return true;
}

// 64*3*7*7 + 64 + 0 + 1 + 10*512 + 3*5*1 floats.
constexpr const char* kFloats = "14608 floats";

}  // namespace

TEST_CASE("one process: the flat sum over one rank leaves the gradients as they are") {
  if (std::string(AE_FLAT_GRADS_PROBE).empty()) return;  // skipped() says why in the next case
  const auto r = test::run_command(std::string(AE_FLAT_GRADS_PROBE));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == std::string("flat probe ok: 1 ranks on cuda:0, ") + kFloats + " in one collective per sum\n");
}

TEST_CASE("two ranks: one collective per sum, exact sums, each rank's device named at start") {
  if (skipped()) return;
  const auto r = test::run_command("OMP_NUM_THREADS=1 " + test::mpirun(2, std::string(AE_FLAT_GRADS_PROBE)));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == std::string("flat probe ok: 2 ranks on cuda:0, ") + kFloats + " in one collective per sum\n");
  CHECK(r.err.find("aesthete: 2 ranks (MPI): rank 0 cuda:0 (emulated device), rank 1 cuda:0 (emulated device)") !=
        std::string::npos);
}
