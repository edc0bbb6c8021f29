#pragma once
// Device graphs for the layers above kernels/ (model/, train/): device work recorded once and
// replayed, dispatched on a device like the ops. Only CUDA devices have graphs (kernels/cuda/graph.h
// describes the capture, what it refuses and its memory rules); asking for one on the CPU is an
// error, never a silent eager fallback.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "kernels/ops.h"
#include "runtime/tensor.h"

namespace ae::ops {

class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  // Queues the recorded work once more, in order with the device's other work.
  virtual void replay() = 0;
  virtual std::size_t node_count() const = 0;
  // Bytes of the graph's private memory pool.
  virtual std::size_t pool_bytes() const = 0;
  virtual const std::string& name() const = 0;
  // A process-wide setting that picks the captured kernels has changed since the capture (on CUDA:
  // the convolution arithmetic, --conv-math), so a replay would not compute what an eager run
  // computes now: the owner must capture again.
  virtual bool settings_changed() const = 0;
};

// Runs `work` with the calling thread capturing the device work it queues on `device`, and returns
// the graph. Nothing of `work`'s device work runs now: outputs are written by replay().
std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::string& name, const std::function<void()>& work);

// ---------------------------------------------------------------- capturable optimiser steps
// A captured step must not take per-step values by value (they would be frozen at the capture): the
// multi-tensor steps below read their coefficients from a device buffer that the caller writes
// before each launch or replay (outside the capture), and skip the whole update when `skip` (i64 [1],
// from nonfinite_flag) is set, as AMP's found_inf does. Same kernels, same bits as
// sgd_step_multi/adam_step_multi (kernels/ops.h). CUDA devices only.
// The coefficients of step `step` (1-based) as CPU bytes (u8), for copy_from into a device buffer of
// the same shape.
Tensor sgd_coefficient_bytes(Device device, const SgdParams& p, int64_t step);
Tensor adam_coefficient_bytes(Device device, const AdamParams& p, int64_t step);
void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                           const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                           const Tensor& coefficients, const Tensor& skip);
void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                            const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                            const std::vector<Tensor*>& v, const Tensor& coefficients, const Tensor& skip);
// i64 [1] on the loss's device: 1 when the f32 scalar `loss` is NaN or infinite, else 0.
Tensor nonfinite_flag(const Tensor& loss);

}  // namespace ae::ops
