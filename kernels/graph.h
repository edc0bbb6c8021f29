#pragma once
// Device graphs for the layers above kernels/ (model/, train/): device work recorded once and
// replayed, dispatched on a device like the ops. Only CUDA devices have graphs (kernels/cuda/graph.h
// describes the capture, what it refuses and its memory rules); asking for one on the CPU is an
// error, never a silent eager fallback.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

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
};

// Runs `work` with the calling thread capturing the device work it queues on `device`, and returns
// the graph. Nothing of `work`'s device work runs now: outputs are written by replay().
std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::string& name, const std::function<void()>& work);

}  // namespace ae::ops
