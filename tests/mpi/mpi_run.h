#pragma once
// What the tests under tests/mpi share: the mpirun command line, and the skip when this build or
// this machine cannot run several ranks (the binary then exits 77 with a SKIPPED line saying why).
#include <filesystem>
#include <string>

#include "runtime/dist.h"
#include "tests/support/check.h"

namespace ae::test {

// "" when several ranks can run here, else why not.
inline std::string mpi_unavailable() {
  if (!dist::built_with_mpi()) return "this build has no MPI support (libopenmpi-dev was not found at configure time)";
  const std::string exe = AE_MPIEXEC;
  if (exe.empty() || !std::filesystem::exists(exe)) return "mpirun was not found at configure time (openmpi-bin)";
  return "";
}

// `command` under mpirun with `ranks` processes. --allow-run-as-root: CI runs as root;
// --oversubscribe: 2 ranks on a machine that may have fewer free cores; --bind-to none: every rank
// may use the cores one process uses (Open MPI binds each rank to one core by default, and
// OpenBLAS sizes its threads, and with them the last bits of some products, by those cores).
inline std::string mpirun(int ranks, const std::string& command) {
  return std::string(AE_MPIEXEC) + " --allow-run-as-root --oversubscribe --bind-to none -np " + std::to_string(ranks) +
         " " + command;
}

}  // namespace ae::test
