#pragma once
// Synchronised BatchNorm for data-parallel training (DESIGN.md "Beyond one process"). While a
// reducer is installed, every training-mode BatchNorm forward and backward passes its per-channel
// sums (in double, with its row count) through it before using them: the reducer sums them over
// the processes of the run, so N processes each holding a shard of a batch normalise with the
// statistics of the whole batch and compute the input gradient one process computes on it.
// dgamma and dbeta stay this process's own sums: they are summed with the other gradients.
//
// Library state with an explicit scope, like the conv-math choice: the training step installs it
// around its forward and backward when several ranks train one model with --sync-bn. Evaluation-
// mode BatchNorm uses running statistics and never calls it. Both backends honour it: the CPU
// backend (kernels/cpu/batchnorm_cpu.cpp) and the CUDA backend (kernels/cuda/batchnorm.cu, which
// downloads the few per-channel sums, calls the reducer on the host and uploads the totals). The
// fused epilogue (batchnorm_apply) takes statistics already computed and never calls it.
// Every backend makes the same calls with the same n (forward: C+1 twice, the sums of x and
// then the squared deviations from the global mean; backward: 2C+1 once, sum(dy*xhat) then
// sum(dy)), so ranks on different backends would still pair their collectives.
#include <cstdint>
#include <functional>

namespace ae::ops {

// Sums `n` doubles across the processes in place (every process passes the same n).
using ChannelSumReducer = std::function<void(double* sums, int64_t n)>;

// The installed reducer, or nullptr (single-process BatchNorm).
const ChannelSumReducer* batchnorm_sync_reducer();

class ScopedBatchNormSync {
 public:
  explicit ScopedBatchNormSync(ChannelSumReducer reducer);
  ~ScopedBatchNormSync();
  ScopedBatchNormSync(const ScopedBatchNormSync&) = delete;
  ScopedBatchNormSync& operator=(const ScopedBatchNormSync&) = delete;

 private:
  ChannelSumReducer reducer_;
  const ChannelSumReducer* previous_;
};

}  // namespace ae::ops
