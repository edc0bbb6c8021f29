#pragma once
// The per-axis sampling plan of resize_bilinear (kernels/ops.h), computed once on the host and
// shared by the CPU and CUDA backends so both read the same weights, bit for bit. It is
// PyTorch 1.13's upsample_bilinear2d (align_corners=False), exactly as train/preprocess.cpp
// computes it: the coordinate scale*(o+0.5)-0.5 in double, clamped at 0, weights rounded to float.
#include <cstdint>
#include <vector>

namespace ae::ops {

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

BilinearAxis bilinear_axis(int64_t in, int64_t out);

}  // namespace ae::ops
