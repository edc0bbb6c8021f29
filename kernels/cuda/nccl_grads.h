#pragma once
// The gradient all-reduce on the GPU (DESIGN.md "Beyond one process": gradients live in one flat
// buffer per device so a step is one collective; collectives run on their own stream).
//
// One sum of a list of float32 tensors over the ranks:
//   1. pack: one kernel (per 48 tensors) copies every tensor into a persistent flat device buffer,
//      queued on the backend's (compute) stream after the backward that made the gradients;
//   2. an event recorded there makes the communication stream wait for the pack;
//   3. the collective (ncclAllReduce, sum) runs on the communication stream;
//   4. an event recorded after it makes the compute stream wait, and
//   5. unpack copies the sums back into the tensors on the compute stream, before the optimiser.
// The host never waits: the next thing that does (the next step's loss) waits for all of it.
// The collective is a parameter, so the pipeline runs (and is tested) on the emulated device too.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/stream.h"
#include "runtime/tensor.h"

namespace ae::cuda {

// Copies each tensor (float32, on the device) to flat[offset, offset + numel), the offsets being
// the running sum of the numels in list order; unpack copies back. Queued on `stream`. `flat`
// holds at least the sum of the numels. Bit-exact copies.
void pack_flat(const std::vector<const Tensor*>& parts, float* flat, Stream stream);
void unpack_flat(const float* flat, const std::vector<Tensor*>& parts, Stream stream);

class FlatAllReduce {
 public:
  // collective(flat, n, stream): queues the in-place sum over the ranks of n floats on `stream`.
  using Collective = std::function<void(float* flat, int64_t n, Stream stream, const std::string& what)>;
  explicit FlatAllReduce(Collective collective);
  ~FlatAllReduce();  // stops the watchdog polling its event (see sum)
  FlatAllReduce(const FlatAllReduce&) = delete;
  FlatAllReduce& operator=(const FlatAllReduce&) = delete;

  // Steps 1-5 above. Every tensor must be float32 on the process's device. The collective's
  // completion is handed to the collective watchdog (runtime/dist.h watch_async): under MPI, a sum
  // that has not finished on the GPU after AE_COLLECTIVE_TIMEOUT ends the process with a message
  // naming `what`, instead of the host hanging at its next wait for the GPU.
  void sum(const std::vector<Tensor*>& tensors, const std::string& what);
  // Elements of the flat buffer now held (it grows to the largest list summed, then is reused).
  int64_t flat_capacity() const { return flat_.defined() ? flat_.numel() : 0; }
  Stream communication_stream() const { return comm_.get(); }

 private:
  Collective collective_;
  Tensor flat_;
  OwnedStream comm_;
  StreamEvent packed_, reduced_;
  std::string watch_key_;  // this reducer's entry in the watchdog
};

// True when gradients can be summed with NCCL here: a real-GPU build with NCCL (whether the
// library loads is found out at the first sum, with an error naming it).
bool nccl_available();
// The sum over all ranks of the job (runtime/dist.h) with NCCL: the communicator and the flat
// buffer are made at the first call, which every rank makes at the same step.
void world_gradient_sum(const std::vector<Tensor*>& tensors, const std::string& what);

}  // namespace ae::cuda
