// Validation and dispatch for the optimizer ops of kernels/ops.h.
// Hyper-parameter checks follow torch.optim's constructors (written so that NaN fails them).
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace ae::ops {
namespace {

// A state or gradient tensor must be f32 and exactly the parameter's shape.
void check_like_param(const char* op, const char* arg, const Tensor& t, const Tensor& param) {
  check_f32(op, arg, t);
  check_shape(op, arg, t, param.shape());
}

void check_step(const char* op, int64_t step) {
  AE_CHECK(step >= 1, op << ": step " << step << " must be at least 1 (the first step is 1)");
}

void check_sgd_params(const char* op, const SgdParams& p) {
  AE_CHECK(p.lr >= 0, op << ": lr " << p.lr << " must be >= 0");
  AE_CHECK(p.momentum >= 0, op << ": momentum " << p.momentum << " must be >= 0");
  AE_CHECK(p.weight_decay >= 0, op << ": weight_decay " << p.weight_decay << " must be >= 0");
  AE_CHECK(!p.nesterov || (p.momentum > 0 && p.dampening == 0),
           op << ": nesterov needs momentum > 0 and dampening = 0 (got momentum " << p.momentum << ", dampening "
              << p.dampening << ")");
}

void check_adam_params(const char* op, const AdamParams& p) {
  AE_CHECK(p.lr >= 0, op << ": lr " << p.lr << " must be >= 0");
  AE_CHECK(p.eps >= 0, op << ": eps " << p.eps << " must be >= 0");
  AE_CHECK(p.beta1 >= 0 && p.beta1 < 1, op << ": beta1 " << p.beta1 << " must be in [0, 1)");
  AE_CHECK(p.beta2 >= 0 && p.beta2 < 1, op << ": beta2 " << p.beta2 << " must be in [0, 1)");
  AE_CHECK(p.weight_decay >= 0, op << ": weight_decay " << p.weight_decay << " must be >= 0");
}

// The tensor behind list entry `index`; a null entry is a caller bug worth a clear message.
template <typename T>
T& entry(const char* op, const char* list, const std::vector<T*>& tensors, std::size_t index) {
  AE_CHECK(tensors[index] != nullptr, op << ": " << list << "[" << index << "] is null");
  return *tensors[index];
}

void check_list_length(const char* op, const char* list, std::size_t length, std::size_t expected) {
  AE_CHECK(length == expected,
           op << ": " << list << " has " << length << " entries but params has " << expected);
}

// "grads[3]": the argument name the single-tensor checks print, with the list index.
std::string indexed(const char* list, std::size_t index) {
  return std::string(list) + "[" + std::to_string(index) + "]";
}

// All defined tensors of the lists share one device (that of params[0]); returns its backend.
using NamedList = std::pair<const char*, const std::vector<const Tensor*>*>;
const Backend& backend_for_lists(const char* op, std::initializer_list<NamedList> lists) {
  const Device device = (*lists.begin()->second)[0]->device();
  for (const auto& [name, tensors] : lists) {
    for (std::size_t i = 0; i < tensors->size(); ++i) {
      const Tensor& t = *(*tensors)[i];
      AE_CHECK(!t.defined() || t.device() == device, op << ": " << name << "[" << i << "] is on " << t.device().str()
                                                        << " but params[0] is on " << device.str()
                                                        << " (all tensors must share one device)");
    }
  }
  return backend_for(op, device);
}

std::vector<const Tensor*> as_const(const std::vector<Tensor*>& tensors) { return {tensors.begin(), tensors.end()}; }

}  // namespace

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const char* op = "sgd_step";
  check_f32(op, "param", param);
  check_like_param(op, "grad", grad, param);
  check_sgd_params(op, p);
  // Without momentum the buffer is unused and may be left undefined.
  if (p.momentum != 0 || momentum_buf.defined()) check_like_param(op, "momentum_buf", momentum_buf, param);
  check_step(op, step);
  const Backend& be = backend_for(op, {&param, &grad, &momentum_buf});
  return be.sgd_step(p, param, grad, momentum_buf, step);
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const char* op = p.decoupled ? "adamw_step" : "adam_step";
  check_f32(op, "param", param);
  check_like_param(op, "grad", grad, param);
  check_like_param(op, "m", m, param);
  check_like_param(op, "v", v, param);
  check_adam_params(op, p);
  check_step(op, step);
  const Backend& be = backend_for(op, {&param, &grad, &m, &v});
  return be.adam_step(p, param, grad, m, v, step);
}

void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step) {
  const char* op = "sgd_step_multi";
  const std::size_t n = params.size();
  check_list_length(op, "grads", grads.size(), n);
  check_list_length(op, "momentum_bufs", momentum_bufs.size(), n);
  check_sgd_params(op, p);
  check_step(op, step);
  for (std::size_t i = 0; i < n; ++i) {
    const Tensor& param = entry(op, "params", params, i);
    check_f32(op, indexed("params", i).c_str(), param);
    check_like_param(op, indexed("grads", i).c_str(), entry(op, "grads", grads, i), param);
    const Tensor& buf = entry(op, "momentum_bufs", momentum_bufs, i);
    if (p.momentum != 0 || buf.defined()) check_like_param(op, indexed("momentum_bufs", i).c_str(), buf, param);
  }
  if (n == 0) return;
  const std::vector<const Tensor*> params_c = as_const(params), bufs_c = as_const(momentum_bufs);
  const Backend& be = backend_for_lists(op, {{"params", &params_c}, {"grads", &grads}, {"momentum_bufs", &bufs_c}});
  be.sgd_step_multi(p, params, grads, momentum_bufs, step);
}

void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step) {
  const char* op = p.decoupled ? "adamw_step_multi" : "adam_step_multi";
  const std::size_t n = params.size();
  check_list_length(op, "grads", grads.size(), n);
  check_list_length(op, "m", m.size(), n);
  check_list_length(op, "v", v.size(), n);
  check_adam_params(op, p);
  check_step(op, step);
  for (std::size_t i = 0; i < n; ++i) {
    const Tensor& param = entry(op, "params", params, i);
    check_f32(op, indexed("params", i).c_str(), param);
    check_like_param(op, indexed("grads", i).c_str(), entry(op, "grads", grads, i), param);
    check_like_param(op, indexed("m", i).c_str(), entry(op, "m", m, i), param);
    check_like_param(op, indexed("v", i).c_str(), entry(op, "v", v, i), param);
  }
  if (n == 0) return;
  const std::vector<const Tensor*> params_c = as_const(params), m_c = as_const(m), v_c = as_const(v);
  const Backend& be = backend_for_lists(op, {{"params", &params_c}, {"grads", &grads}, {"m", &m_c}, {"v", &v_c}});
  be.adam_step_multi(p, params, grads, m, v, step);
}

}  // namespace ae::ops
