#pragma once
// NCCL communicators for the gradient all-reduce on GPUs (DESIGN.md "Beyond one process").
//
// NCCL is compiled in when CMake found nccl.h in the CUDA toolkit (AE_HAVE_NCCL: a real-GPU build
// with MPI), but libnccl.so.2 is not linked: it is loaded with dlopen when the first communicator
// is made. aesthete links cudart statically and never links cuDNN so that one binary starts on
// machines without the CUDA libraries; linking libnccl would make every run, even a CPU one, fail
// at start-up where NCCL is not installed. Where dlopen looks, in order: $AE_NCCL_LIBRARY,
// "libnccl.so.2" (LD_LIBRARY_PATH, ld.so.cache), the file CMake found at configure time. A missing
// library is an ae::Error naming every place tried.
//
// Bootstrapping: rank 0 makes NCCL's unique id and the other ranks receive it through MPI
// (share_id below is dist::broadcast), then every rank calls ncclCommInitRank. MPI only launches
// the ranks and carries those 128 bytes; the collectives themselves run on the GPUs.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "kernels/cuda/stream.h"  // Stream; host-compiled code includes this header

namespace ae::cuda::nccl {

// True when this library was built with NCCL (a real-GPU build that found nccl.h).
bool compiled();
// Loads libnccl (once) and returns its version, e.g. "2.28.9"; ae::Error when it cannot be
// loaded or lacks a function aesthete calls. Not available without compiled().
std::string load_library();

// One rank's member of an NCCL communicator on the process's CUDA device.
class Communicator {
 public:
  // Collective over `ranks` ranks: rank 0 makes the unique id, `share_id(bytes, size)` must carry
  // it from rank 0 to every rank (in place; MPI broadcast), then all ranks join. With ranks == 1,
  // share_id may do nothing. ae::Error (naming `what`) on any NCCL failure.
  Communicator(int ranks, int rank, const std::function<void(void* bytes, std::size_t size)>& share_id,
               const std::string& what);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Queues the in-place sum of `n` floats over the ranks on `stream` (ncclAllReduce, ncclSum);
  // returns without waiting. `what` names the call in errors.
  void allreduce_sum(float* data, std::size_t n, Stream stream, const std::string& what);
  int ranks() const { return ranks_; }
  int rank() const { return rank_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int ranks_ = 1, rank_ = 0;
};

}  // namespace ae::cuda::nccl
