#include "kernels/resize_taps.h"

#include <algorithm>
#include <cmath>

namespace ae::ops {

BilinearAxis bilinear_axis(int64_t in_size, int64_t out_size) {
  const int in = static_cast<int>(in_size), out = static_cast<int>(out_size);
  // The scale is a float quotient, widened to double: PyTorch's choice (see the header).
  const double scale = static_cast<float>(in) / static_cast<float>(out);
  BilinearAxis axis;
  axis.taps.resize(static_cast<std::size_t>(out));
  axis.readers.assign(static_cast<std::size_t>(in), TapReaders{out, 0});
  for (int o = 0; o < out; ++o) {
    const double src = std::max(scale * (o + 0.5) - 0.5, 0.0);
    const int i0 = std::min(static_cast<int>(src), in - 1);
    const int i1 = i0 < in - 1 ? i0 + 1 : i0;
    const float lambda1 = static_cast<float>(std::clamp(src - i0, 0.0, 1.0));
    axis.taps[static_cast<std::size_t>(o)] = BilinearTap{i0, i1, 1.0f - lambda1, lambda1};
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

namespace {

ResampleAxis bilinear_resample(int64_t in, int64_t out) {
  const BilinearAxis axis = bilinear_axis(in, out);
  ResampleAxis r;
  r.start.reserve(axis.taps.size() + 1);
  r.index.reserve(axis.taps.size() * 2);
  r.weight.reserve(axis.taps.size() * 2);
  r.start.push_back(0);
  for (const BilinearTap& t : axis.taps) {
    r.index.push_back(t.i0);
    r.weight.push_back(t.w0);
    r.index.push_back(t.i1);
    r.weight.push_back(t.w1);
    r.start.push_back(static_cast<int32_t>(r.index.size()));
  }
  return r;
}

// PyTorch 1.13's _upsample_bilinear2d_aa weights, float/double mix included (see the header).
ResampleAxis antialias_resample(int64_t in_size, int64_t out_size) {
  const int in = static_cast<int>(in_size), out = static_cast<int>(out_size);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = scale >= 1.0f ? scale : 1.0f;
  const float invscale = scale >= 1.0f ? static_cast<float>(1.0 / scale) : 1.0f;
  ResampleAxis r;
  r.start.reserve(static_cast<std::size_t>(out) + 1);
  r.start.push_back(0);
  std::vector<float> w;
  for (int o = 0; o < out; ++o) {
    const float center = static_cast<float>(scale * (o + 0.5));
    const int xmin = std::max(static_cast<int>((center - support) + 0.5), 0);
    const int xmax = std::min(static_cast<int>((center + support) + 0.5), in);
    w.clear();
    float total = 0.0f;
    for (int j = xmin; j < xmax; ++j) {
      const float x = std::fabs(static_cast<float>((static_cast<float>(j) - center + 0.5) * invscale));
      const float v = x < 1.0f ? 1.0f - x : 0.0f;
      w.push_back(v);
      total += v;
    }
    for (int j = xmin; j < xmax; ++j) {
      r.index.push_back(j);
      r.weight.push_back(total != 0.0f ? w[static_cast<std::size_t>(j - xmin)] / total : 0.0f);
    }
    r.start.push_back(static_cast<int32_t>(r.index.size()));
  }
  return r;
}

}  // namespace

ResampleAxis resample_axis(int64_t in, int64_t out, ResizeFilter filter) {
  return filter == ResizeFilter::antialias ? antialias_resample(in, out) : bilinear_resample(in, out);
}

}  // namespace ae::ops
