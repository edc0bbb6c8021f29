#pragma once
// Resize sampling plans: the ONE place where resize weights are computed (DESIGN.md, "Input
// gradients": preprocessing has one definition). Every resize in the project reads its source
// indices and weights from here, computed once on the host per call:
//   - the ops resize_bilinear_forward/backward (kernels/ops.h), CPU and CUDA backends alike, read
//     bilinear_axis (the CUDA backend uploads the same floats, so both use the same weights, bit
//     for bit);
//   - train/preprocess.cpp's resize_bilinear (scoring's preprocess_eval and the training
//     transforms) reads resample_axis(..., ResizeFilter::bilinear), which is bilinear_axis's taps
//     unchanged, and resize_bilinear_antialias reads resample_axis(..., ResizeFilter::antialias).
//
// Bilinear is PyTorch 1.13's upsample_bilinear2d (align_corners=False, antialias=False) along one
// axis: the scale in/out is a float quotient widened to double, the source coordinate
// scale*(o+0.5)-0.5 and its fraction are evaluated in double, src is clamped below at 0,
// i0 = floor(src), i1 = min(i0+1, in-1), and the weights are stored as float:
// w1 = float(clamp(src - i0, 0, 1)), w0 = 1 - w1 (in float). That is what PyTorch 1.13's CPU
// kernel produces, checked weight by weight (rounding the coordinate to float instead moves
// weights by up to 1.5e-5 at 224 pixels). There is no antialiasing filter when shrinking.
//
// Antialias is PyTorch's _upsample_bilinear2d_aa (PIL's algorithm) along one axis: a triangle
// filter whose support is widened by the scale when shrinking, weights normalised to sum to 1,
// with PyTorch 1.13's mix of float and double (its scalar_t is float, its literals double);
// copying it makes the weights equal PyTorch's, where a clean double computation differs by up to
// 1.3e-5 at 224 pixels. Why the ops have no antialias filter: it is not part of the preprocessing
// definition. preprocess_eval (what `aesthete score` runs), the training transforms and the
// differentiable path (img::preprocess_eval_ops) all resize to the network input with the plain
// bilinear filter, which the ops implement with these same taps. The antialias filter is only
// img::resize_bilinear_antialias, a host-side utility (PyTorch parity; shrinking a large photo
// to a working copy before preprocessing), never differentiated through.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ae::ops {

// Largest accepted input or output side of a resize, so a typo cannot allocate gigabytes
// (checked by the ops and by train/preprocess.cpp alike).
inline constexpr int64_t kMaxResizeSide = int64_t{1} << 15;

// Output position o reads inputs i0 and i1 (i1 == i0 at the last pixel) with weights w0, w1.
struct BilinearTap {
  int32_t i0, i1;
  float w0, w1;
};

// The outputs [first, last) whose taps read one input position: a contiguous range, because
// i0 and i1 never decrease with o. The backward gathers over exactly these.
struct TapReaders {
  int32_t first, last;
};

struct BilinearAxis {
  std::vector<BilinearTap> taps;      // one per output position
  std::vector<TapReaders> readers;    // one per input position
};

// The bilinear plan of one axis of in -> out positions (both in 1..kMaxResizeSide).
BilinearAxis bilinear_axis(int64_t in, int64_t out);

enum class ResizeFilter {
  bilinear,   // bilinear_axis's taps: two per output, i0 then i1
  antialias,  // PyTorch's antialias=True triangle filter: a variable number of taps per output
};

// Any separable resize along one axis: output o reads inputs index[k] with weights weight[k] for
// k in [start[o], start[o+1]), summed in that order.
struct ResampleAxis {
  std::vector<int32_t> start;  // outputs + 1 offsets into index and weight
  std::vector<int32_t> index;
  std::vector<float> weight;
  int64_t outputs() const { return start.empty() ? 0 : static_cast<int64_t>(start.size()) - 1; }
  int32_t taps(int64_t o) const {
    return start[static_cast<std::size_t>(o) + 1] - start[static_cast<std::size_t>(o)];
  }
};

// ResizeFilter::bilinear gives bilinear_axis(in, out).taps as they are (same indices, same
// float weights, same order); ResizeFilter::antialias the triangle filter described above.
ResampleAxis resample_axis(int64_t in, int64_t out, ResizeFilter filter);

}  // namespace ae::ops
