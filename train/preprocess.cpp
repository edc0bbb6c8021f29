#include "train/preprocess.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace ae::img {
namespace {

// Upper bound for a requested size, so a typo cannot allocate gigabytes.
constexpr int kMaxSide = 1 << 15;

void check_size(const char* what, int out_h, int out_w) {
  AE_CHECK(out_h > 0 && out_w > 0 && out_h <= kMaxSide && out_w <= kMaxSide,
           what << ": output size " << out_h << "x" << out_w << " must be in 1.." << kMaxSide);
}

// One output position of a separable resize: source indices and their weights (an index may
// repeat: at the edge PyTorch blends the last pixel with itself, and so do we).
struct Taps {
  std::vector<int> index;
  std::vector<float> weight;
};

// PyTorch's upsample_bilinear2d (align_corners=False) along one axis. The scale in/out is a
// float, but the source coordinate scale*(o+0.5)-0.5 and its fraction are evaluated in double
// before the weight is stored as float: that is what PyTorch 1.13's CPU kernel produces (checked
// weight by weight against it; rounding the coordinate to float instead moves weights by up to
// 1.5e-5 at 224 pixels). src is clamped at 0, i0 = floor(src), i1 = min(i0+1, in-1).
std::vector<Taps> bilinear_taps(int in, int out) {
  const double scale = static_cast<float>(in) / static_cast<float>(out);
  std::vector<Taps> taps(out);
  for (int o = 0; o < out; ++o) {
    const double src = std::max(scale * (o + 0.5) - 0.5, 0.0);
    const int i0 = std::min(static_cast<int>(src), in - 1);
    const int i1 = i0 < in - 1 ? i0 + 1 : i0;
    const float lambda1 = static_cast<float>(std::clamp(src - i0, 0.0, 1.0));
    taps[o].index = {i0, i1};
    taps[o].weight = {1.0f - lambda1, lambda1};
  }
  return taps;
}

// PyTorch's _upsample_bilinear2d_aa (PIL's algorithm) along one axis: a triangle filter whose
// support is widened by the scale when shrinking, weights normalised to sum to 1. The mix of
// float and double below is PyTorch 1.13's (its scalar_t is float, its literals are double);
// copying it makes our weights equal to PyTorch's, where a clean double computation differs by
// up to 1.3e-5 at 224 pixels.
std::vector<Taps> antialias_taps(int in, int out) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = scale >= 1.0f ? scale : 1.0f;
  const float invscale = scale >= 1.0f ? static_cast<float>(1.0 / scale) : 1.0f;
  std::vector<Taps> taps(out);
  for (int o = 0; o < out; ++o) {
    const float center = static_cast<float>(scale * (o + 0.5));
    const int xmin = std::max(static_cast<int>((center - support) + 0.5), 0);
    const int xmax = std::min(static_cast<int>((center + support) + 0.5), in);
    std::vector<float> w;
    float total = 0.0f;
    for (int j = xmin; j < xmax; ++j) {
      const float x = std::fabs(static_cast<float>((static_cast<float>(j) - center + 0.5) * invscale));
      const float v = x < 1.0f ? 1.0f - x : 0.0f;
      w.push_back(v);
      total += v;
    }
    for (int j = xmin; j < xmax; ++j) {
      taps[o].index.push_back(j);
      taps[o].weight.push_back(total != 0.0f ? w[j - xmin] / total : 0.0f);
    }
  }
  return taps;
}

// Rows first, then columns: out = sum_y wy * (sum_x wx * in[y][x]), the order PyTorch's CPU
// kernel uses for the bilinear case. `value(p)` turns a stored sample into the float the
// formula sees, so an 8-bit image is resized without first materialising a float copy (for a
// 24-megapixel photo that copy would be 288 MB) while giving the same bits as to_float first.
template <typename Sample, typename ToFloat>
ImageF resize_separable(const Sample* pixels, int in_w, const std::vector<Taps>& ty, const std::vector<Taps>& tx,
                        ToFloat value) {
  ImageF out;
  out.height = static_cast<int>(ty.size());
  out.width = static_cast<int>(tx.size());
  out.rgb.assign(std::size_t(out.height) * out.width * 3, 0.0f);
  const std::size_t in_stride = std::size_t(in_w) * 3;
  const auto resize_rows = [&](int64_t row_begin, int64_t row_end) {
    for (int oy = static_cast<int>(row_begin); oy < static_cast<int>(row_end); ++oy) {
      const Taps& wy = ty[oy];
      for (int ox = 0; ox < out.width; ++ox) {
        const Taps& wx = tx[ox];
        float acc[3] = {0, 0, 0};
        for (std::size_t ky = 0; ky < wy.index.size(); ++ky) {
          const Sample* row = pixels + std::size_t(wy.index[ky]) * in_stride;
          float along_x[3] = {0, 0, 0};
          for (std::size_t kx = 0; kx < wx.index.size(); ++kx) {
            const Sample* p = row + std::size_t(wx.index[kx]) * 3;
            for (int c = 0; c < 3; ++c) along_x[c] += wx.weight[kx] * value(p[c]);
          }
          for (int c = 0; c < 3; ++c) acc[c] += wy.weight[ky] * along_x[c];
        }
        float* o = out.rgb.data() + (std::size_t(oy) * out.width + ox) * 3;
        for (int c = 0; c < 3; ++c) o[c] = acc[c];
      }
    }
  };
  // Rows are independent. A row costs about width * 3 * taps_y * taps_x multiply-adds; give each
  // thread at least ~16k of them, or waking it costs more than it saves.
  const int64_t taps = int64_t(ty.empty() ? 1 : ty[0].index.size()) * int64_t(tx.empty() ? 1 : tx[0].index.size());
  const int64_t row_cost = std::max<int64_t>(1, int64_t(out.width) * 3 * taps);
  parallel_rows(out.height, std::max<int64_t>(1, 16384 / row_cost), resize_rows);
  return out;
}

const auto kAsIs = [](float v) { return v; };
// Exactly to_float's conversion.
const auto kUnitRange = [](uint8_t v) { return static_cast<float>(v) / 255.0f; };

}  // namespace

ImageF resize_bilinear(const ImageF& im, int out_h, int out_w) {
  check_image(im, "resize_bilinear");
  check_size("resize_bilinear", out_h, out_w);
  if (out_h == im.height && out_w == im.width) return im;  // identity, bit-exact
  return resize_separable(im.rgb.data(), im.width, bilinear_taps(im.height, out_h), bilinear_taps(im.width, out_w),
                          kAsIs);
}

ImageF resize_bilinear(const Image& im, int out_h, int out_w) {
  check_image(im, "resize_bilinear");
  check_size("resize_bilinear", out_h, out_w);
  if (out_h == im.height && out_w == im.width) return to_float(im);
  return resize_separable(im.rgb.data(), im.width, bilinear_taps(im.height, out_h), bilinear_taps(im.width, out_w),
                          kUnitRange);
}

ImageF resize_bilinear_antialias(const ImageF& im, int out_h, int out_w) {
  check_image(im, "resize_bilinear_antialias");
  check_size("resize_bilinear_antialias", out_h, out_w);
  if (out_h == im.height && out_w == im.width) return im;
  return resize_separable(im.rgb.data(), im.width, antialias_taps(im.height, out_h),
                          antialias_taps(im.width, out_w), kAsIs);
}

ImageF resize_bilinear_antialias(const Image& im, int out_h, int out_w) {
  check_image(im, "resize_bilinear_antialias");
  check_size("resize_bilinear_antialias", out_h, out_w);
  if (out_h == im.height && out_w == im.width) return to_float(im);
  return resize_separable(im.rgb.data(), im.width, antialias_taps(im.height, out_h),
                          antialias_taps(im.width, out_w), kUnitRange);
}

ae::Tensor normalize_imagenet(const ImageF& im) {
  check_image(im, "normalize_imagenet");
  ae::Tensor t = ae::Tensor::empty({1, im.height, im.width, 3});
  float* out = t.f32();
  const std::size_t n = im.rgb.size() / 3;
  for (std::size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) out[i * 3 + c] = (im.rgb[i * 3 + c] - kImagenetMean[c]) / kImagenetStd[c];
  return t;
}

ae::Tensor preprocess_eval(const Image& im, int size) {
  check_image(im, "preprocess_eval");
  return normalize_imagenet(size > 0 ? resize_bilinear(im, size, size) : to_float(im));
}

}  // namespace ae::img
