#include "kernels/graph.h"

#include "kernels/backend.h"
#include "runtime/error.h"

namespace ae::ops {

std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::string& name, const std::function<void()>& work) {
  return backend_for("capture_graph", device).capture_graph(name, work);
}

Tensor sgd_coefficient_bytes(Device device, const SgdParams& p, int64_t step) {
  return backend_for("sgd_coefficient_bytes", device).sgd_coefficient_bytes(p, step);
}

Tensor adam_coefficient_bytes(Device device, const AdamParams& p, int64_t step) {
  return backend_for("adam_coefficient_bytes", device).adam_coefficient_bytes(p, step);
}

void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                           const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                           const Tensor& coefficients, const Tensor& skip) {
  AE_CHECK(params.size() == grads.size() && params.size() == momentum_bufs.size(),
           "sgd_step_multi_device: " << params.size() << " params, " << grads.size() << " grads, "
                                     << momentum_bufs.size() << " momentum buffers");
  backend_for("sgd_step_multi_device", {&coefficients, &skip})
      .sgd_step_multi_device(p, params, grads, momentum_bufs, coefficients, skip);
}

void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                            const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                            const std::vector<Tensor*>& v, const Tensor& coefficients, const Tensor& skip) {
  AE_CHECK(params.size() == grads.size() && params.size() == m.size() && params.size() == v.size(),
           "adam_step_multi_device: " << params.size() << " params, " << grads.size() << " grads, " << m.size()
                                      << " m, " << v.size() << " v");
  backend_for("adam_step_multi_device", {&coefficients, &skip})
      .adam_step_multi_device(p, params, grads, m, v, coefficients, skip);
}

Tensor nonfinite_flag(const Tensor& loss) { return backend_for("nonfinite_flag", {&loss}).nonfinite_flag(loss); }

}  // namespace ae::ops
