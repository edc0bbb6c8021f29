#include "kernels/resize_taps.h"

#include <algorithm>

namespace ae::ops {

BilinearAxis bilinear_axis(int64_t in_size, int64_t out_size) {
  const int in = static_cast<int>(in_size), out = static_cast<int>(out_size);
  // The scale is a float quotient, widened to double: PyTorch's (and preprocess.cpp's) choice.
  const double scale = static_cast<float>(in) / static_cast<float>(out);
  BilinearAxis axis;
  axis.taps.resize(static_cast<std::size_t>(out));
  axis.readers.assign(static_cast<std::size_t>(in), TapReaders{out, 0});
  for (int o = 0; o < out; ++o) {
    const double src = std::max(scale * (o + 0.5) - 0.5, 0.0);
    const int i0 = std::min(static_cast<int>(src), in - 1);
    const int i1 = i0 < in - 1 ? i0 + 1 : i0;
    const float lambda1 = static_cast<float>(std::clamp(src - i0, 0.0, 1.0));
    axis.taps[o] = BilinearTap{i0, i1, 1.0f - lambda1, lambda1};
    for (const int i : {i0, i1}) {
      TapReaders& r = axis.readers[static_cast<std::size_t>(i)];
      r.first = std::min(r.first, o);
      r.last = std::max(r.last, o + 1);
    }
  }
  for (TapReaders& r : axis.readers) {
    if (r.first >= r.last) r = TapReaders{0, 0};  // read by no output (shrinking): empty range
  }
  return axis;
}

}  // namespace ae::ops
