// The Winograd forward's BatchNorm epilogue: see kernels/cpu/winograd_epilogue.h. Compiled with
// -ffp-contract=off (CMakeLists.txt): batchnorm_element's multiply and add stay two roundings.
#include "kernels/cpu/winograd_epilogue.h"

#include "kernels/cpu/batchnorm_apply.h"

namespace ae::cpu {
namespace {

// One body per CpuIsa (the loops over channels vectorise to that ISA's width); `residual` and
// `relu` are constants where rows() inlines it, so each of its four loops is branch-free.
#define AE_WINOGRAD_EPILOGUE_BODY                                                                               \
  static inline __attribute__((always_inline)) void rows_of(const ConvEpilogue& ep, float* y, int64_t offset,  \
                                                           int64_t pixels, int64_t c, bool residual, bool relu) { \
    const float* __restrict mean = ep.mean;                                                                     \
    const float* __restrict scale = ep.scale;                                                                   \
    const float* __restrict beta = ep.beta;                                                                     \
    for (int64_t q = 0; q < pixels; ++q) {                                                                      \
      float* __restrict out = y + offset + q * c;                                                               \
      const float* __restrict res = residual ? ep.residual + offset + q * c : nullptr;                          \
      for (int64_t j = 0; j < c; ++j)                                                                           \
        out[j] = batchnorm_element(out[j], mean[j], scale[j], beta[j], residual ? res + j : nullptr, relu);     \
    }                                                                                                           \
  }                                                                                                             \
  void rows(const ConvEpilogue& ep, float* y, int64_t offset, int64_t pixels, int64_t c) {                      \
    if (ep.residual) {                                                                                          \
      if (ep.relu)                                                                                              \
        rows_of(ep, y, offset, pixels, c, true, true);                                                          \
      else                                                                                                      \
        rows_of(ep, y, offset, pixels, c, true, false);                                                         \
    } else {                                                                                                    \
      if (ep.relu)                                                                                              \
        rows_of(ep, y, offset, pixels, c, false, true);                                                         \
      else                                                                                                      \
        rows_of(ep, y, offset, pixels, c, false, false);                                                        \
    }                                                                                                           \
  }

namespace isa_plain {
AE_WINOGRAD_EPILOGUE_BODY
}  // namespace isa_plain

// The ISA variants (kernels/cpu/cpu_isa.h: AE_ISA_*_BEGIN).
AE_ISA_AVX2_BEGIN
namespace isa_avx2 {
AE_WINOGRAD_EPILOGUE_BODY
}  // namespace isa_avx2
AE_ISA_END

AE_ISA_AVX512_BEGIN
namespace isa_avx512 {
AE_WINOGRAD_EPILOGUE_BODY
}  // namespace isa_avx512
AE_ISA_END

#undef AE_WINOGRAD_EPILOGUE_BODY

}  // namespace

WinogradEpilogueRows winograd_epilogue_rows(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512: return isa_avx512::rows;
    case CpuIsa::avx2: return isa_avx2::rows;
    case CpuIsa::plain: break;
  }
  return isa_plain::rows;
}

}  // namespace ae::cpu
