#include "kernels/graph.h"

#include "kernels/backend.h"

namespace ae::ops {

std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::string& name, const std::function<void()>& work) {
  return backend_for("capture_graph", device).capture_graph(name, work);
}

}  // namespace ae::ops
