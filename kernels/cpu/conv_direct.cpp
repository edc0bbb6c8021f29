#include "kernels/cpu/conv_direct.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/batchnorm_apply.h"
#include "runtime/error.h"
#include "runtime/tensor.h"
#include "runtime/thread_pool.h"

namespace ae::cpu {
namespace {

// What both forms read. Windows are resolved a tile at a time (window_taps), never for the whole
// batch: a stem at batch 32 has 20 million taps.
struct DirectPlan {
  const ConvGeometry* g = nullptr;
  int64_t m = 0, o = 0, c = 0, k = 0, taps = 0;
  const float* x = nullptr;
  const float* zeros = nullptr;  // c zeros: the input run under a tap outside the image
  const float* w = nullptr;      // dot form: [o][k], k = taps * c
  const float* wt = nullptr;     // broadcast form: the same transposed, [k][o]
  float* y = nullptr;            // [m][o]
  ConvEpilogue ep;               // applied as each output is stored
  // Row-run mode (broadcast form, few input channels: the stem): x is a zero-padded copy
  // [N][run_h][run_w][C] that holds every window, a "tap" is a whole kernel row and c = KW * C:
  // a window row is one contiguous run there, so the stem has 7 runs of 21 floats per pixel instead
  // of 49 taps of 3. The k order, and so every sum, is the same as with single taps.
  int64_t run_h = 0, run_w = 0;
};

// tap[r * taps + t] = the input run (c floats) under tap t of output pixel p0 + r's window (pixels
// past m: the last one again), or the zero run where the window leaves the image.
void window_taps(const DirectPlan& d, int64_t p0, int rows, const float** tap) {
  const ConvGeometry& g = *d.g;
  if (d.run_w > 0) {  // row-run mode: tap i = kernel row i, always inside the padded copy
    for (int r = 0; r < rows; ++r) {
      const int64_t p = std::min(p0 + r, d.m - 1);
      const int64_t img = p / (g.oh * g.ow), oy = p / g.ow % g.oh, ox = p % g.ow;
      const float* run = d.x + ((img * d.run_h + oy * g.sh) * d.run_w + ox * g.sw) * g.c;
      for (int64_t i = 0; i < g.kh; ++i, run += d.run_w * g.c) tap[r * d.taps + i] = run;
    }
    return;
  }
  for (int r = 0; r < rows; ++r) {
    const int64_t p = std::min(p0 + r, d.m - 1);
    const int64_t img = p / (g.oh * g.ow), oy = p / g.ow % g.oh, ox = p % g.ow;
    const float** out = tap + r * d.taps;
    // A kernel row's taps inside the image are one contiguous range of j: the stem has 49 taps per
    // pixel, so this loop is kept to a store and an add per tap.
    const int64_t ix0 = ox * g.sw - g.pw;
    const int64_t j_lo = std::clamp<int64_t>(-ix0, 0, g.kw), j_hi = std::clamp<int64_t>(g.w - ix0, j_lo, g.kw);
    for (int64_t i = 0; i < g.kh; ++i, out += g.kw) {
      const int64_t iy = oy * g.sh - g.ph + i;
      if (iy < 0 || iy >= g.h) {
        for (int64_t j = 0; j < g.kw; ++j) out[j] = d.zeros;
        continue;
      }
      for (int64_t j = 0; j < j_lo; ++j) out[j] = d.zeros;
      const float* run = d.x + ((img * g.h + iy) * g.w + ix0 + j_lo) * g.c;
      for (int64_t j = j_lo; j < j_hi; ++j, run += g.c) out[j] = run;
      for (int64_t j = j_hi; j < g.kw; ++j) out[j] = d.zeros;
    }
  }
}

// Per-thread room for one tile's taps (grow only).
const float** tap_scratch(int64_t n) {
  thread_local std::vector<const float*> s;
  if (static_cast<int64_t>(s.size()) < n) s.resize(static_cast<std::size_t>(n));
  return s.data();
}

}  // namespace

// The ISA variants (kernels/cpu/cpu_isa.h: AE_ISA_*_BEGIN).
AE_ISA_AVX2_BEGIN
namespace isa_avx2 {
namespace {
struct Vec {
  using type = __m256;
  static constexpr int64_t kLanes = 8;
  static type zero() { return _mm256_setzero_ps(); }
  static type load(const float* p) { return _mm256_loadu_ps(p); }
  static type fma(type a, type b, type acc) { return _mm256_fmadd_ps(a, b, acc); }
  static type broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static void store(float* p, type v) { _mm256_storeu_ps(p, v); }
  static type sub(type a, type b) { return _mm256_sub_ps(a, b); }
  static type mul(type a, type b) { return _mm256_mul_ps(a, b); }
  static type add(type a, type b) { return _mm256_add_ps(a, b); }
  static type relu(type v) { return _mm256_max_ps(v, zero()); }  // NaN -> 0 and -0 -> +0, as v > 0 ? v : 0
  static float sum(type v) {  // ((0+4)+(2+6)) + ((1+5)+(3+7))
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};
// 16 ymm registers: 3 x 3 accumulators, 3 weight vectors, 1 input vector; the broadcast form's
// 6 x 2 accumulators, 2 weight vectors and 1 broadcast input.
constexpr int kRows = 3, kCols = 3;
constexpr int kBRows = 6, kBVecs = 2;
#include "kernels/cpu/conv_direct_kernels.inc"
}  // namespace
}  // namespace isa_avx2
AE_ISA_END

AE_ISA_AVX512_BEGIN
namespace isa_avx512 {
namespace {
struct Vec {
  using type = __m512;
  static constexpr int64_t kLanes = 16;
  static type zero() { return _mm512_setzero_ps(); }
  static type load(const float* p) { return _mm512_loadu_ps(p); }
  static type fma(type a, type b, type acc) { return _mm512_fmadd_ps(a, b, acc); }
  static type broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static void store(float* p, type v) { _mm512_storeu_ps(p, v); }
  static type sub(type a, type b) { return _mm512_sub_ps(a, b); }
  static type mul(type a, type b) { return _mm512_mul_ps(a, b); }
  static type add(type a, type b) { return _mm512_add_ps(a, b); }
  // NaN -> 0 and -0 -> +0, as v > 0 ? v : 0. (The masked form: GCC 12 warns that the plain
  // _mm512_max_ps's pass-through register "may be used uninitialized".)
  static type relu(type v) { return _mm512_mask_max_ps(zero(), 0xFFFF, v, zero()); }
  static float sum(type v) {  // halves added pairwise down to one lane
    const __m256 h = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 e = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(e, _mm_shuffle_ps(e, e, 1)));
  }
};
// 32 zmm registers: 5 x 4 accumulators, 4 weight vectors, 1 input vector (6 x 4 would fit on paper,
// but GCC 12 then spills a weight vector to the stack in the inner loop).
constexpr int kRows = 5, kCols = 4;
// The broadcast form: 6 x 4 accumulators (6 pixels by 64 channels), 4 weight vectors, 1 broadcast.
constexpr int kBRows = 6, kBVecs = 4;
#include "kernels/cpu/conv_direct_kernels.inc"

// dst[j * dst_stride + i] = src[i * src_stride + j] for a 16 x 16 block: the broadcast form's
// weight transpose, 16 rows in registers (unpack, then shuffles within and across 128-bit lanes).
// The scalar loop took 5 % of a batch-1 forward once layer2 used this form. (GCC 12 warns that the
// unpack intrinsics' pass-through register, _mm512_undefined_ps, "is used uninitialized"; it is
// unused with a full mask, so the warning is silenced for this function alone.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
void transpose16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    _mm512_storeu_ps(dst + i * dst_stride, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
    _mm512_storeu_ps(dst + (i + 8) * dst_stride, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
  }
}
#pragma GCC diagnostic pop
}  // namespace
}  // namespace isa_avx512
AE_ISA_END

namespace {

int64_t lanes(CpuIsa isa) { return isa == CpuIsa::avx512 ? 16 : isa == CpuIsa::avx2 ? 8 : 0; }

// Output channels per broadcast tile.
int64_t broadcast_block(CpuIsa isa) {
  return isa == CpuIsa::avx512 ? isa_avx512::kBVecs * 16 : isa_avx2::kBVecs * 8;
}

DirectPlan plan(const ConvGeometry& g, const float* x, const float* zeros, float* y, const ConvEpilogue& ep) {
  DirectPlan d;
  d.ep = ep;
  d.g = &g;
  d.m = g.m(), d.o = g.o, d.c = g.c, d.taps = g.kh * g.kw, d.k = g.k();
  d.x = x, d.zeros = zeros, d.y = y;
  return d;
}

// Switches d to row-run mode (DirectPlan) over `padded`, the input copied with its padding made
// explicit (rows and columns no window reaches are left out). Measured on the stem at batch 1
// (bench_conv_direct, AVX-512): 0.81 ms against 1.15-2.1 ms with single taps, the copy included.
void use_row_runs(const ConvGeometry& g, const float* x, Tensor& padded, DirectPlan& d) {
  const int64_t run_h = (g.oh - 1) * g.sh + g.kh, run_w = (g.ow - 1) * g.sw + g.kw;
  padded = Tensor::empty({g.n * run_h * run_w * g.c});  // the host cache: no page faults per call
  float* out = padded.f32();
  // Input columns some window reaches, and where they land in a padded row.
  const int64_t cols = std::clamp<int64_t>(run_w - g.pw, 0, g.w), left = std::min(g.pw, run_w);
  parallel_rows(g.n * run_h, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = out + r * run_w * g.c;
      const int64_t img = r / run_h, iy = r % run_h - g.ph;
      if (iy < 0 || iy >= g.h) {
        std::fill_n(row, run_w * g.c, 0.0f);
        continue;
      }
      std::fill_n(row, left * g.c, 0.0f);
      std::copy_n(x + ((img * g.h + iy) * g.w) * g.c, cols * g.c, row + left * g.c);
      std::fill_n(row + (left + cols) * g.c, (run_w - left - cols) * g.c, 0.0f);
    }
  });
  d.x = out;
  d.run_h = run_h;
  d.run_w = run_w;
  d.taps = g.kh;
  d.c = g.kw * g.c;
}

void dot_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa, const ConvEpilogue& ep) {
  const std::vector<float> zeros(static_cast<std::size_t>(g.c), 0.0f);
  DirectPlan d = plan(g, x, zeros.data(), y, ep);
  d.w = w;
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

void broadcast_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa,
                       const ConvEpilogue& ep) {
  const std::vector<float> zeros(static_cast<std::size_t>(g.c), 0.0f);
  DirectPlan d = plan(g, x, zeros.data(), y, ep);
  Tensor padded;
  if (g.c < 8 && g.kw > 1) use_row_runs(g, x, padded, d);
  // wt [k][o] = w [o][k]: the weights of the layers this form is chosen for are small (at most
  // 384 KB), so transposing them each call costs little, in 16 x 16 blocks over the threads (a
  // plain strided loop on one thread took a third of layer2's first convolution at batch 1).
  const Tensor wt_buffer = Tensor::empty({d.k * d.o});  // the host cache: no page faults per call
  float* wt = wt_buffer.f32();
  constexpr int64_t kBlock = 16;
  parallel_rows((d.k + kBlock - 1) / kBlock, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t k0 = b0 * kBlock; k0 < std::min(b1 * kBlock, d.k); k0 += kBlock) {
      const int64_t k1 = std::min(k0 + kBlock, d.k);
      if (isa == CpuIsa::avx512 && k1 - k0 == kBlock && d.o % kBlock == 0) {
        for (int64_t o0 = 0; o0 < d.o; o0 += kBlock) isa_avx512::transpose16(w + o0 * d.k + k0, d.k, wt + k0 * d.o + o0, d.o);
        continue;
      }
      for (int64_t o0 = 0; o0 < d.o; o0 += kBlock)
        for (int64_t o = o0; o < std::min(o0 + kBlock, d.o); ++o)
          for (int64_t k = k0; k < k1; ++k) wt[k * d.o + o] = w[o * d.k + k];
    }
  });
  d.wt = wt;
  const int64_t rows = isa == CpuIsa::avx512 ? isa_avx512::kBRows : isa_avx2::kBRows;
  const int64_t tiles = (d.m + rows - 1) / rows;
  // Each output is one sum in k order whatever tile or thread holds it.
  const int64_t min_tiles = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, rows * d.k * d.o));
  parallel_rows(tiles, min_tiles, [&](int64_t t0, int64_t t1) {
    if (isa == CpuIsa::avx512)
      isa_avx512::broadcast_tiles(d, t0, t1);
    else
      isa_avx2::broadcast_tiles(d, t0, t1);
  });
}

}  // namespace

const char* direct_form_name(DirectForm form) { return form == DirectForm::dot ? "dot" : "broadcast"; }

bool conv_direct_applicable(const ConvGeometry& g, CpuIsa isa, DirectForm form) {
  const int64_t l = lanes(isa);
  if (l == 0 || !cpu_isa_available(isa) || g.c <= 0 || g.o <= 0) return false;
  return form == DirectForm::dot ? g.c % l == 0 : g.o % broadcast_block(isa) == 0;
}

bool conv_direct_profitable(const ConvGeometry& g, CpuIsa isa, DirectForm form) {
  if (isa != CpuIsa::avx512) return false;
  if (form == DirectForm::dot) {
    // Measured with bench/bench_conv_direct (A/B in one process, 2-core AMD EPYC with AVX-512,
    // against OpenBLAS's own AVX-512 kernels; bench/RESULTS.md "Direct convolution"): at batch 1
    // layer3 and layer4 (196 and 49 pixels) took 0.7-0.85x the time of im2col or Winograd; at 392
    // pixels it was even, at 784 (layer2) Winograd F(2x2) was faster. Short K (the 1x1 downsamples
    // with 64 or 128 channels) loses to the GEMM: the lane sums then cost as much as the products.
    // With AVX2 the 3 x 3 tile only drew even with OpenBLAS's Haswell kernels at batch 1
    // (0.8-1.1x), so neither form is chosen automatically there.
    return g.m() <= kConvDirectMaxPixels && g.k() >= 256;
  }
  // The broadcast form, measured the same way: ahead of Winograd F(2x2) and im2col at batch 1, 4
  // and 32 on layer1 (64 -> 64), layer2's first 3x3 and its 1x1 downsample (64 -> 128); even on
  // the stem, where it also saves the 7 MB column matrix; behind on layer2's other 3x3 convolutions
  // (590 KB of weights) at batch 32 and from layer3 on, where the transposed weights no longer
  // stay in L2 and each input value is broadcast against more channel blocks.
  // Layer2's other 3x3 convolutions at batch 1 (784 pixels, 590 KB of weights) measured 0.83x
  // Winograd's time alone and about 2 % faster over a whole forward, but 1.1x at batch 32: with few
  // pixels the weights are transposed and streamed few times.
  if (g.o > kConvBroadcastMaxChannels) return false;
  const int64_t weights = g.k() * g.o;
  return weights <= kConvBroadcastMaxWeights ||
         (weights <= kConvBroadcastMaxWeightsFewPixels && g.m() <= kConvBroadcastFewPixels);
}

void conv_direct_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa,
                         DirectForm form, const ConvEpilogue& epilogue) {
  AE_CHECK(conv_direct_applicable(g, isa, form),
           "conv_direct_forward: the " << direct_form_name(form) << " form on " << cpu_isa_name(isa)
                                       << " does not take C = " << g.c << ", O = " << g.o);
  if (g.m() == 0) return;
  if (form == DirectForm::dot)
    dot_forward(g, x, w, y, isa, epilogue);
  else
    broadcast_forward(g, x, w, y, isa, epilogue);
}

}  // namespace ae::cpu
