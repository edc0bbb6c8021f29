// Adapts the free functions of ae::cpu to the Backend interface: an override per op of the op list
// (kernels/op_list.h) calling the function of the same name, and the fused op the CPU speeds up.
#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"

namespace ae::ops {
namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
#define AE_CPU_OVERRIDE(...) AE_OP_OVERRIDE_CALLING(cpu, __VA_ARGS__)
  AE_BACKEND_OPS(AE_CPU_OVERRIDE)
#undef AE_CPU_OVERRIDE
  Tensor conv2d_batchnorm(const Conv2dParams& conv, const BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                          const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                          const Tensor& residual) const override {
    return cpu::conv2d_batchnorm(conv, bn, x, w, gamma, beta, mean, var_or_invstd, residual);
  }
};

}  // namespace

const Backend& cpu_backend() {
  static const CpuBackend b;
  return b;
}

}  // namespace ae::ops
