// Convolution backward passes as implicit GEMMs over NHWC activations and OHWI weights, float32
// on CUDA cores (kernels/cuda/tiled_gemm.h). With x [N,H,W,C], w [O,KH,KW,C], dy [N,OH,OW,O]:
//
//   backward-data    dx[m, c] = sum_k  A[m, k] * w[o, kh, kw, c]
//                    m = (n, ih, iw), k = (kh, kw, o), A[m, k] = dy[n, oh, ow, o] where
//                    ih = oh*sh - ph + kh (zero when no output pixel reads ih through tap kh);
//                    run per stride phase so that only taps that can reach a pixel are multiplied
//   backward-weight  dw[o, j] = sum_r  dy[r, o] * X[r, j]
//                    r = (n, oh, ow), j = (kh, kw, c), X = the forward's im2col matrix, gathered
//
// Both run on CUDA cores (tiled_gemm.h) or, with conv_math() tf32 / bf16, on tensor cores
// (tiled_gemm_tc.h), through the same loaders. In tf32 / bf16, backward-data runs each stride phase
// on the pipelined implicit-GEMM kernel of the forward instead (conv_implicit_gemm.cu: cp.async
// into a 3-stage ring, swizzled tiles, ldmatrix), with the same k order and the same bits, after
// transposing w to w_t [KH, KW, C, O]; the loaders below remain its fallback and the reference its
// test compares against (set_conv_backward_data_kernel forces either).
//
// Backward-weight reduces over N*OH*OW, which is large for early layers and small for late ones;
// it splits that reduction into a shape-determined number of fixed slices, writes one partial dw per
// slice to a workspace and sums the partials in slice order: deterministic, no float atomics. In
// tf32 / bf16 the GEMM over those slices runs on a second pipelined kernel (conv_wgrad_igemm.cu:
// the same cp.async ring with [k][row] stages, split-K over grid.z), with the same slices, k order
// and bits; DyTransposed / InputUnderTap remain its fallback and the reference its test compares
// against (set_conv_backward_weight_kernel forces either).
#include <algorithm>

#include "kernels/conv_geometry.h"
#include "kernels/cuda/conv_backward.h"
#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/tiled_gemm_tc.h"
#include "kernels/emu/profile.h"

namespace ae::cuda {
namespace {

using ConvShape = ae::ConvGeometry;  // kernels/conv_geometry.h

// Backward-data runs once per stride phase (rh, rw): the input pixels ih = rh + sh*i, iw = rw + sw*j.
// Output pixel oh reads ih through tap kh only when ih + ph - kh is a multiple of sh, so a phase
// needs only the taps kh = kh0 + sh*t with kh0 = (rh + ph) mod sh (likewise for w). Splitting by
// phase skips the structurally zero products a strided convolution's dgrad would otherwise
// multiply (3/4 of them at stride 2); at stride 1 there is one phase with every tap.
struct DgradPhase {
  ConvShape g;
  int64_t rh, rw;          // first input row / column of the phase
  int64_t rows, cols;      // input rows / columns in the phase
  int64_t kh0, kw0;        // first tap of the phase
  int64_t taps_h, taps_w;  // taps in the phase
  // Input pixel of phase-local GEMM row m = (img, i, j), as a flat NHW index.
  __device__ __forceinline__ int64_t pixel(int64_t m, int64_t& ih, int64_t& iw) const {
    const int64_t j = m % cols, i = m / cols % rows, img = m / (cols * rows);
    ih = rh + g.sh * i;
    iw = rw + g.sw * j;
    return (img * g.h + ih) * g.w + iw;
  }
};

DgradPhase dgrad_phase(const ConvShape& g, int64_t rh, int64_t rw) {
  DgradPhase p{};
  p.g = g;
  p.rh = rh, p.rw = rw;
  p.rows = rh < g.h ? (g.h - rh + g.sh - 1) / g.sh : 0;
  p.cols = rw < g.w ? (g.w - rw + g.sw - 1) / g.sw : 0;
  p.kh0 = (rh + g.ph) % g.sh, p.kw0 = (rw + g.pw) % g.sw;
  p.taps_h = p.kh0 < g.kh ? (g.kh - p.kh0 + g.sh - 1) / g.sh : 0;
  p.taps_w = p.kw0 < g.kw ? (g.kw - p.kw0 + g.sw - 1) / g.sw : 0;
  return p;
}

// backward-data A[m, k]: the output gradient that reaches phase pixel m through phase tap
// k = (th, tw, o), or 0 when that tap's output pixel lies outside the output.
struct DyThroughTap {
  static constexpr bool kAlongK = true;  // o is dy's innermost dimension
  DgradPhase p;
  const float* __restrict__ dy;
  __device__ __forceinline__ float operator()(int64_t m, int64_t k) const {
    const ConvShape& g = p.g;
    int64_t ih = 0, iw = 0;
    const int64_t at = p.pixel(m, ih, iw);
    const int64_t img = at / (g.h * g.w);
    const int64_t o = k % g.o, tap = k / g.o;
    const int64_t kw = p.kw0 + g.sw * (tap % p.taps_w), kh = p.kh0 + g.sh * (tap / p.taps_w);
    const int64_t th = ih + g.ph - kh, tw = iw + g.pw - kw;  // multiples of the stride by construction
    if (th < 0 || tw < 0) return 0.0f;
    const int64_t oh = th / g.sh, ow = tw / g.sw;
    if (oh >= g.oh || ow >= g.ow) return 0.0f;
    return dy[((img * g.oh + oh) * g.ow + ow) * g.o + o];
  }
};

// backward-data B[c, k] = w[o, kh, kw, c] for phase tap k = (th, tw, o).
struct WeightByTapThenOut {
  static constexpr bool kAlongK = false;  // c is the weight's innermost dimension
  DgradPhase p;
  const float* __restrict__ w;
  __device__ __forceinline__ float operator()(int64_t c, int64_t k) const {
    const ConvShape& g = p.g;
    const int64_t o = k % g.o, tap = k / g.o;
    const int64_t kw = p.kw0 + g.sw * (tap % p.taps_w), kh = p.kh0 + g.sh * (tap / p.taps_w);
    return w[((o * g.kh + kh) * g.kw + kw) * g.c + c];
  }
};

struct StoreDx {
  DgradPhase p;
  float* __restrict__ dx;
  __device__ __forceinline__ void operator()(int64_t m, int64_t c, int64_t, float v) const {
    int64_t ih = 0, iw = 0;
    dx[p.pixel(m, ih, iw) * p.g.c + c] = v;
  }
};

// backward-weight A[o, r] = dy[r, o].
struct DyTransposed {
  static constexpr bool kAlongK = false;  // o is dy's innermost dimension
  const float* __restrict__ dy;
  int64_t o;
  __device__ __forceinline__ float operator()(int64_t oc, int64_t r) const { return dy[r * o + oc]; }
};

// backward-weight B[j, r]: the input value under tap j = (kh, kw, c) for output pixel r, or 0 in
// the padding (the forward's implicit im2col matrix, read transposed).
struct InputUnderTap {
  static constexpr bool kAlongK = false;  // c, the innermost part of j, is x's innermost dimension
  ConvShape g;
  const float* __restrict__ x;
  __device__ __forceinline__ float operator()(int64_t j, int64_t r) const {
    const int64_t ow = r % g.ow, oh = r / g.ow % g.oh, img = r / (g.ow * g.oh);
    const int64_t c = j % g.c, tap = j / g.c;
    const int64_t ih = oh * g.sh - g.ph + tap / g.kw, iw = ow * g.sw - g.pw + tap % g.kw;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return 0.0f;
    return x[((img * g.h + ih) * g.w + iw) * g.c + c];
  }
};

// Slice s of the weight gradient goes to out + s * slice_elements (out = dw when there is one slice).
struct StoreWeightSlice {
  float* __restrict__ out;
  int64_t row_length;  // KH*KW*C
  int64_t slice_elements;
  __device__ __forceinline__ void operator()(int64_t o, int64_t j, int64_t s, float v) const {
    out[s * slice_elements + o * row_length + j] = v;
  }
};

constexpr int kThreads = 256;

// dw[i] = sum over slices in slice order (double, rounded once).
__global__ void sum_slices_kernel(const float* __restrict__ partials, int64_t slices, int64_t elements,
                                  float* __restrict__ dw) {
  for (int64_t i = first_index(); i < elements; i += index_stride()) {
    double total = 0.0;
    for (int64_t s = 0; s < slices; ++s) total += partials[s * elements + i];
    dw[i] = static_cast<float>(total);
  }
}

// w_t[j, o] = w[o, j]: the [O, J] weight matrix (J = KH*KW*C) transposed to [KH, KW, C, O] for the
// pipelined backward-data kernel, through a padded 32x32 shared tile so that the reads and the
// writes are both coalesced (blocks of 32x8 threads).
constexpr int kTransposeTile = 32, kTransposeRows = 8;
__global__ void transpose_weight_kernel(const float* __restrict__ w, int64_t o, int64_t j, float* __restrict__ w_t) {
  AE_SHARED(float, tile, kTransposeTile * (kTransposeTile + 1));
  const int tx = static_cast<int>(threadIdx.x) % kTransposeTile, ty = static_cast<int>(threadIdx.x) / kTransposeTile;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTransposeTile;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kTransposeTile;
  for (int r = ty; r < kTransposeTile; r += kTransposeRows) {
    if (o0 + r < o && j0 + tx < j) tile[r * (kTransposeTile + 1) + tx] = w[(o0 + r) * j + j0 + tx];
  }
  __syncthreads();
  for (int r = ty; r < kTransposeTile; r += kTransposeRows) {
    if (j0 + r < j && o0 + tx < o) w_t[(j0 + r) * o + o0 + tx] = tile[tx * (kTransposeTile + 1) + r];
  }
}

}  // namespace

int64_t conv_wgrad_split_count(int64_t reduction_rows, int64_t output_tiles) {
  // Below this many rows per slice, writing and re-reading a slice's partial dw costs more than
  // the extra parallelism gains.
  constexpr int64_t kMinRowsPerSlice = 256;
  // Enough blocks for two waves on a 132-SM GPU; more only adds workspace traffic.
  constexpr int64_t kTargetBlocks = 264;
  constexpr int64_t kMaxSlices = 64;
  const int64_t by_work = reduction_rows / kMinRowsPerSlice;
  const int64_t by_occupancy = (kTargetBlocks + output_tiles - 1) / std::max<int64_t>(output_tiles, 1);
  return std::clamp<int64_t>(std::min(by_work, by_occupancy), 1, kMaxSlices);
}

Tensor conv2d_backward_data(const ops::Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape) {
  const ConvShape g(p, x_shape, w.dim(0));
  Tensor dx = Tensor::empty(x_shape, DType::f32, dy.device());
  const ConvMath math = conv_math();
  // (and the transpose's grid fits: ceil(O / 32) blocks in y)
  const bool pipelined = conv_backward_data_pipelined_enabled(math, g, dy.f32(), dx.f32()) &&
                         (g.o + kTransposeTile - 1) / kTransposeTile <= 65535;
  Tensor w_t;
  if (pipelined) {
    const int64_t taps_c = g.kh * g.kw * g.c;
    w_t = Tensor::empty({taps_c * g.o}, DType::f32, dy.device());
    AE_LAUNCH(transpose_weight_kernel,
              dim3(static_cast<unsigned>((taps_c + kTransposeTile - 1) / kTransposeTile),
                   static_cast<unsigned>((g.o + kTransposeTile - 1) / kTransposeTile)),
              dim3(kTransposeTile * kTransposeRows), 0, nullptr, w.f32(), g.o, taps_c, w_t.f32());
  }
  // One GEMM per stride phase; together the phases cover every input pixel exactly once, and a
  // phase without taps (e.g. odd pixels of a 1x1 stride-2 conv) stores zeros.
  for (int64_t rh = 0; rh < g.sh; ++rh) {
    for (int64_t rw = 0; rw < g.sw; ++rw) {
      const DgradPhase phase = dgrad_phase(g, rh, rw);
      gemm::GemmShape s;
      s.m = g.n * phase.rows * phase.cols;
      s.n = g.c;
      s.k = phase.taps_h * phase.taps_w * g.o;
      if (s.m == 0) continue;  // no input pixel in this phase (H < sh or W < sw)
      ae::emu::profile_next_launch_flops(2.0 * s.m * s.n * s.k, conv_math_name(math));  // emulated-device profile
      if (pipelined) {
        const ConvDgradPhase desc{phase.rh,  phase.rw,  phase.rows,   phase.cols,
                                  phase.kh0, phase.kw0, phase.taps_h, phase.taps_w};
        conv_backward_data_pipelined_phase(
            LaunchSite{"conv2d_backward_data (pipelined implicit GEMM)", __FILE__, __LINE__}, math, g, desc,
            dy.f32(), w_t.f32(), dx.f32());
        continue;
      }
      if (math == ConvMath::f32) {
        note_conv_backward_data_f32_tiled();
      } else {
        note_conv_backward_data_tc_tiled();
      }
      s.k_per_split = std::max<int64_t>((s.k + gemm::kTileK - 1) / gemm::kTileK, 1) * gemm::kTileK;  // one slice
      gemm::run_gemm(LaunchSite{"conv2d_backward_data (implicit GEMM)", __FILE__, __LINE__}, math, s,
                     DyThroughTap{phase, dy.f32()}, WeightByTapThenOut{phase, w.f32()}, StoreDx{phase, dx.f32()});
    }
  }
  return dx;
}

Tensor conv2d_backward_weight(const ops::Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape) {
  const ConvShape g(p, x.shape(), w_shape[0]);
  gemm::GemmShape s;
  s.m = g.o;
  s.n = g.kh * g.kw * g.c;
  s.k = g.n * g.oh * g.ow;
  const int64_t tiles = (s.m + gemm::kTileM - 1) / gemm::kTileM * ((s.n + gemm::kTileN - 1) / gemm::kTileN);
  const int64_t wanted = conv_wgrad_split_count(s.k, tiles);
  const int64_t rows_per_slice = (s.k + wanted - 1) / wanted;
  s.k_per_split = (rows_per_slice + gemm::kTileK - 1) / gemm::kTileK * gemm::kTileK;
  const int64_t slices = (s.k + s.k_per_split - 1) / s.k_per_split;  // rounding may drop one
  const ConvMath math = conv_math();
  if (conv_stem_padding_applies(g.c, false)) {  // the stem path (conv_backward.h): same slices, same bits
    const Tensor x4 = resize_channels(x, 4);
    const ConvShape g4(p, x4.shape(), g.o);
    const int64_t elements4 = g4.o * g4.kh * g4.kw * g4.c;
    Tensor dw4 = Tensor::empty({g4.o, g4.kh, g4.kw, g4.c}, DType::f32, x.device());
    Tensor partials4;
    if (slices > 1) partials4 = Tensor::empty({slices * elements4}, DType::f32, x.device());
    ae::emu::profile_next_launch_flops(2.0 * s.m * elements4 / g4.o * s.k, conv_math_name(math));
    const LaunchSite site{"conv2d_backward_weight (pipelined implicit GEMM, stem padded to 4 channels)", __FILE__,
                          __LINE__};
    if (conv_backward_weight_pipelined(site, math, g4, x4.f32(), dy.f32(), slices > 1 ? partials4.f32() : dw4.f32(),
                                       s.k_per_split, slices)) {
      note_conv_backward_weight_stem_padded();
      if (slices > 1) sum_conv_slices(partials4.f32(), slices, elements4, dw4.f32());
      return resize_channels(dw4, 3);
    }
  }
  Tensor dw = Tensor::empty(w_shape, DType::f32, x.device());
  const int64_t elements = dw.numel();
  ae::emu::profile_next_launch_flops(2.0 * s.m * s.n * s.k, conv_math_name(math));  // emulated-device profile
  // One slice: straight into dw; several: one partial dw per slice, summed below in slice order.
  Tensor partials;
  if (slices > 1) partials = Tensor::empty({slices * elements}, DType::f32, x.device());
  float* const out = slices > 1 ? partials.f32() : dw.f32();
  if (!conv_backward_weight_pipelined(LaunchSite{"conv2d_backward_weight (pipelined implicit GEMM)", __FILE__, __LINE__},
                                      math, g, x.f32(), dy.f32(), out, s.k_per_split, slices)) {
    if (math == ConvMath::f32) {
      note_conv_backward_weight_f32_tiled();
    } else {
      note_conv_backward_weight_tc_tiled();
    }
    gemm::run_gemm(LaunchSite{"conv2d_backward_weight (implicit GEMM)", __FILE__, __LINE__}, math, s,
                   DyTransposed{dy.f32(), g.o}, InputUnderTap{g, x.f32()}, StoreWeightSlice{out, s.n, elements});
  }
  if (slices > 1) sum_conv_slices(partials.f32(), slices, elements, dw.f32());
  return dw;
}

void sum_conv_slices(const float* partials, int64_t slices, int64_t elements, float* out) {
  AE_LAUNCH(sum_slices_kernel, dim3(blocks_for(elements, kThreads)), dim3(kThreads), 0, nullptr, partials, slices,
            elements, out);
}

namespace {

// Pixels of `from` channels to pixels of `to` channels (the first min(from, to) copied, zeros
// beyond), `row_pixels` output pixels per output row of `row_out` floats (zeros after the pixels).
// One thread per output element, so that a warp's loads cover contiguous bytes and its stores 128
// (one thread per pixel with a 16-byte store reads at a 12-byte stride: 33 % of each load's sectors
// used, in the emulated profile).
__global__ void resize_channels_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t elements,
                                       int64_t from, int64_t to, int64_t row_pixels, int64_t row_out) {
  for (int64_t i = first_index(); i < elements; i += index_stride()) {
    const int64_t row = i / row_out, j = i % row_out, ch = j % to;
    out[i] = j < row_pixels * to && ch < from ? in[(row * row_pixels + j / to) * from + ch] : 0.0f;
  }
}

// t [..., C] -> rows of row_pixels pixels of `channels` channels, each row padded to row_out floats.
Tensor resize_channels_into_rows(const Tensor& t, int64_t channels, Shape shape, int64_t row_pixels, int64_t row_out) {
  AE_CHECK(t.dtype() == DType::f32 && t.ndim() >= 1 && channels > 0,
           "resize_channels: expected f32 [..., C] and channels > 0, got " << t.desc() << " and " << channels);
  Tensor out = Tensor::empty(shape, DType::f32, t.device());
  const int64_t elements = out.numel();
  if (elements == 0) return out;
  AE_LAUNCH(resize_channels_kernel, dim3(blocks_for(elements, kThreads)), dim3(kThreads), 0, nullptr, t.f32(),
            out.f32(), elements, t.shape().back(), channels, row_pixels, row_out);
  return out;
}

}  // namespace

Tensor resize_channels(const Tensor& t, int64_t channels) {
  Shape shape = t.shape();
  if (!shape.empty()) shape.back() = channels;
  return resize_channels_into_rows(t, channels, shape, 1, channels);
}

int64_t stem_weight_row(int64_t taps) { return (taps * 4 + 7) / 8 * 8; }

Tensor pad_stem_weight(const Tensor& w) {
  AE_CHECK(w.ndim() == 4 && w.dim(3) == 3, "pad_stem_weight: expected a weight [O, KH, KW, 3], got " << w.desc());
  const int64_t taps = w.dim(1) * w.dim(2), row = stem_weight_row(taps);
  return resize_channels_into_rows(w, 4, {w.dim(0), row}, taps, row);
}

bool conv_stem_padding_applies(int64_t c, bool forward) {
  const bool automatic = forward ? conv_forward_kernel() == ConvForwardKernel::automatic
                                 : conv_backward_weight_kernel() == ConvBackwardWeightKernel::automatic;
  return c == 3 && conv_math() != ConvMath::f32 && automatic;
}

}  // namespace ae::cuda
