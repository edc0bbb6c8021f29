#pragma once
// Processes of one run (DESIGN.md "Beyond one process"): rank, size, node-local rank and the few
// collectives aesthete needs, on MPI when the build found it (AE_WITH_MPI, see CMakeLists.txt) and
// the process was launched by mpirun or srun. Otherwise a run is one process: size 1, rank 0, and
// every collective returns its input unchanged, so callers need no branch of their own.
//
// Collectives never wait forever. mpirun already ends the whole job when a rank dies (it exits
// without MPI_Finalize); a rank that is alive but stuck is caught here: a collective that has
// not completed after AE_COLLECTIVE_TIMEOUT seconds (default 900) makes the waiting rank print
// "error (rank r of n): <collective> did not complete within ..." and exit, and mpirun then ends
// the others. Calls that legitimately wait on uneven work (the end of a personalisation, where
// one rank may still train its last user for hours) pass Wait::unbounded.
//
// Collectives are called from the main thread only (MPI is started with MPI_THREAD_FUNNELED); a
// watchdog thread, which never calls MPI, ends the process when one waits too long.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace ae {
class Tensor;
}

namespace ae::dist {

// Starts MPI when built with it and launched by mpirun/srun (reads OMPI_COMM_WORLD_SIZE,
// PMIX_RANK, PMI_SIZE); a second call does nothing. A build without MPI launched as several
// ranks is an error saying so (every rank would write the same files).
void init(int* argc, char*** argv);
// MPI_Finalize when init started MPI; safe to call when it did not.
void finalize();

bool built_with_mpi();
bool active();    // MPI is running (launched by mpirun/srun, even with one rank)
int rank();       // 0 in a single process
int size();       // 1 in a single process
int local_rank(); // rank among the processes on this node (for the GPU a rank takes)
bool is_root();   // rank() == 0: the one process that writes shared files

// Seconds a collective may wait before the job is aborted (AE_COLLECTIVE_TIMEOUT, default 900).
double collective_timeout_seconds();
enum class Wait { bounded, unbounded };

// Device work that the host queues without waiting for it (the NCCL gradient all-reduce runs on a
// stream of its own, kernels/cuda/nccl_grads.h) is watched too: watch_async(key, what, finished)
// starts the clock for `what`, and the watchdog thread polls finished() about every 100 ms until it
// returns true. Past AE_COLLECTIVE_TIMEOUT the process ends with the stalled-collective message, so a
// rank whose GPU collective never completes (another rank died inside NCCL, or never reached it)
// does not hang in its next wait for the GPU. A watch with the same key replaces the earlier one
// (one pending collective per stream); unwatch_async(key) drops it, and must run before what
// finished() reads is destroyed. finished() runs on the watchdog's thread: it must be thread-safe,
// must not call MPI, and an exception from it counts as finished (the main thread meets the error
// itself at its next call). Both do nothing unless MPI is running.
void watch_async(const std::string& key, const std::string& what, std::function<bool()> finished);
void unwatch_async(const std::string& key);

// `what` names the collective in timeout and error messages ("gradient all-reduce, step 12").
void barrier(const std::string& what, Wait wait = Wait::bounded);
void allreduce_sum(float* data, int64_t n, const std::string& what);
void allreduce_sum(double* data, int64_t n, const std::string& what);
void broadcast(void* data, int64_t bytes, int root, const std::string& what);
// Every rank's bytes, in rank order, on rank 0; an empty vector on the other ranks.
std::vector<std::string> gather_to_root(const std::string& mine, const std::string& what, Wait wait = Wait::bounded);

// Under MPI: one line on stderr from rank 0 naming the number of ranks and each rank's device
// ("aesthete: 2 ranks (MPI): rank 0 cpu, rank 1 cpu"; "rank 1 cuda:1 (NVIDIA H200)" for a device
// with a label, see set_device_label). Nothing in a single process.
void announce(const std::string& device);
// What announce() adds after a device's name ("cuda:1" -> "NVIDIA H200"); set by the backend that
// brought the device up (kernels/cuda/runtime.cu), so the front ends need not know about GPUs.
void set_device_label(const std::string& device, const std::string& label);

// The GPU a process takes (DESIGN.md "Beyond one process": each rank owns one device, its
// node-local rank). `requested` >= 0 (from --device cuda:N) wins; else a process launched as one
// of several ranks takes its node-local rank modulo the devices it can see (4 ranks on 4 GPUs:
// rank r on GPU r; under srun --gpus-per-task=1 each rank sees one GPU and takes it); else 0.
// Throws ae::Error naming the request when `requested` is not below `device_count`.
// A pure function, so the choice is tested without GPUs or MPI.
int choose_device(int requested, bool launched, int local_rank, int device_count);

// A sum over the ranks of tensors on a device, made on the device (NCCL), so gradients never
// travel through host memory. A device backend that can do it registers one
// (kernels/cuda/runtime.cu when built with NCCL); train/train_loop.cpp sums gradients with it and
// falls back to allreduce_sum of one host buffer where none is registered for the device.
struct DeviceAllReduce {
  std::string name;  // "NCCL", for messages
  // Sums every tensor (float32, all on the device) over the ranks, in place: one collective on one
  // flat buffer. Every rank passes tensors of the same shapes in the same order.
  std::function<void(const std::vector<Tensor*>& tensors, const std::string& what)> sum;
};
void set_device_allreduce(DeviceKind kind, DeviceAllReduce reducer);
// The reducer registered for `kind`, or nullptr.
const DeviceAllReduce* device_allreduce(DeviceKind kind);

// Prints "error (rank r of n): message" and ends every rank of the job (MPI_Abort), or exits
// with `code` in a single process.
[[noreturn]] void abort_job(const std::string& message, int code = 1);

}  // namespace ae::dist
