#include "kernels/cpu/conv_direct.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace ae::cpu {
namespace {

// What every tile reads: tap[p * taps + t] is the input run (c floats) under tap t of output pixel
// p's window, or a run of zeros where the window leaves the image.
struct DirectPlan {
  int64_t m = 0, o = 0, c = 0, k = 0, taps = 0;
  const float* const* tap = nullptr;
  const float* w = nullptr;  // [o][k], k = taps * c
  float* y = nullptr;        // [m][o]
};

}  // namespace

// GCC: a target region; clang (the sanitizer and fuzzer builds): the same as an attribute pushed
// onto every function of the region (as in kernels/cpu/winograd.cpp).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace isa_avx2 {
namespace {
struct Vec {
  using type = __m256;
  static constexpr int64_t kLanes = 8;
  static type zero() { return _mm256_setzero_ps(); }
  static type load(const float* p) { return _mm256_loadu_ps(p); }
  static type fma(type a, type b, type acc) { return _mm256_fmadd_ps(a, b, acc); }
  static float sum(type v) {  // ((0+4)+(2+6)) + ((1+5)+(3+7))
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};
// 16 ymm registers: 3 x 3 accumulators, 3 weight vectors, 1 input vector.
constexpr int kRows = 3, kCols = 3;
#include "kernels/cpu/conv_direct_kernels.inc"
}  // namespace
}  // namespace isa_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
#endif
namespace isa_avx512 {
namespace {
struct Vec {
  using type = __m512;
  static constexpr int64_t kLanes = 16;
  static type zero() { return _mm512_setzero_ps(); }
  static type load(const float* p) { return _mm512_loadu_ps(p); }
  static type fma(type a, type b, type acc) { return _mm512_fmadd_ps(a, b, acc); }
  static float sum(type v) {  // halves added pairwise down to one lane
    const __m256 h = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 e = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(e, _mm_shuffle_ps(e, e, 1)));
  }
};
// 32 zmm registers: 5 x 4 accumulators, 4 weight vectors, 1 input vector (6 x 4 would fit on paper,
// but GCC 12 then spills a weight vector to the stack in the inner loop).
constexpr int kRows = 8, kCols = 3;
#include "kernels/cpu/conv_direct_kernels.inc"
}  // namespace
}  // namespace isa_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace {

int64_t lanes(CpuIsa isa) { return isa == CpuIsa::avx512 ? 16 : isa == CpuIsa::avx2 ? 8 : 0; }

}  // namespace

bool conv_direct_applicable(const ConvGeometry& g, CpuIsa isa) {
  const int64_t l = lanes(isa);
  return l > 0 && cpu_isa_available(isa) && g.c % l == 0 && g.c > 0 && g.o > 0;
}

bool conv_direct_profitable(const ConvGeometry& g, CpuIsa isa) {
  // Measured with bench/bench_conv_direct (A/B in one process, 2-core AMD EPYC with AVX-512, against
  // OpenBLAS's own AVX-512 kernels; bench/RESULTS.md "Direct convolution"): at batch 1 layer3 and
  // layer4 (196 and 49 pixels) took 0.7-0.85x the time of im2col or Winograd; at 392 pixels it was
  // even, at 784 (layer2) Winograd F(2x2) was faster. Short K (the 1x1 downsamples with 64 or 128
  // channels) loses to the GEMM: the lane sums then cost as much as the products. With AVX2 the
  // 3 x 3 tile only drew even with OpenBLAS's Haswell kernels at batch 1 (0.8-1.1x), so it is not
  // chosen automatically there.
  return isa == CpuIsa::avx512 && g.m() <= kConvDirectMaxPixels && g.k() >= 256;
}

void conv_direct_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa) {
  AE_CHECK(conv_direct_applicable(g, isa), "conv_direct_forward: geometry with C = " << g.c << " on "
                                               << cpu_isa_name(isa) << " is not supported");
  DirectPlan d;
  d.m = g.m(), d.o = g.o, d.c = g.c, d.taps = g.kh * g.kw, d.k = g.k();
  d.w = w, d.y = y;
  if (d.m == 0) return;
  // The window of every output pixel, tap by tap; 8 bytes per tap, against the column matrix's
  // 4 * C bytes (im2col).
  const std::vector<float> zeros(static_cast<std::size_t>(g.c), 0.0f);
  std::vector<const float*> tap(static_cast<std::size_t>(d.m * d.taps));
  for (int64_t p = 0; p < d.m; ++p) {
    const int64_t img = p / (g.oh * g.ow), oy = p / g.ow % g.oh, ox = p % g.ow;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t iy = oy * g.sh - g.ph + i, ix = ox * g.sw - g.pw + j;
        const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
        tap[p * d.taps + i * g.kw + j] = inside ? x + ((img * g.h + iy) * g.w + ix) * g.c : zeros.data();
      }
  }
  d.tap = tap.data();
  const int64_t cols = isa == CpuIsa::avx512 ? isa_avx512::kCols : isa_avx2::kCols;
  const int64_t groups = (g.o + cols - 1) / cols;
  // Each output is computed the same way whichever band holds it, so any split gives the same bits.
  const int64_t min_groups = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, d.m * d.k * cols));
  parallel_rows(groups, min_groups, [&](int64_t g0, int64_t g1) {
    if (isa == CpuIsa::avx512)
      isa_avx512::channel_groups(d, g0, g1);
    else
      isa_avx2::channel_groups(d, g0, g1);
  });
}

}  // namespace ae::cpu
