#pragma once
// The ReLU output a BatchNorm backward applies the ReLU's backward of as it reads dy
// (ops::batchnorm_backward_train's relu_y), stored as f32 or bf16, or none. One definition for
// the CPU loop (kernels/cpu/batchnorm_cpu.cpp) and the CUDA kernels (kernels/cuda/batchnorm.cu):
// relu_backward's select, dy where the stored output is > 0, else 0.
// Compiles as host and device code (nvcc), and with g++ for the emulated device.
#include <cstdint>

#include "runtime/bf16.h"
#include "runtime/tensor.h"

namespace ae {

struct ReluMask {
  const float* f32 = nullptr;      // at most one of the two is set; neither: no ReLU
  const BFloat16* bf16 = nullptr;

  // dy[i], or 0 where the ReLU's output is not positive. Which storage is uniform over a launch,
  // so the branch never diverges.
  AE_BF16_HD float through(const float* dy, int64_t i) const {
    const float g = dy[i];
    if (bf16 != nullptr) return load_as_float(bf16, i) > 0.0f ? g : 0.0f;
    return f32 == nullptr || f32[i] > 0.0f ? g : 0.0f;
  }
};

// The mask of relu_y (undefined: none).
inline ReluMask relu_mask_of(const Tensor& relu_y) {
  ReluMask m;
  if (!relu_y.defined()) return m;
  if (relu_y.dtype() == DType::bf16) {
    m.bf16 = relu_y.data<BFloat16>();
  } else {
    m.f32 = relu_y.f32();
  }
  return m;
}

}  // namespace ae
