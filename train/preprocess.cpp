#include "train/preprocess.h"

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/resize_taps.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace ae::img {
namespace {

using ops::ResampleAxis;
using ops::ResizeFilter;

void check_size(const char* what, int out_h, int out_w) {
  AE_CHECK(out_h > 0 && out_w > 0 && out_h <= ops::kMaxResizeSide && out_w <= ops::kMaxResizeSide,
           what << ": output size " << out_h << "x" << out_w << " must be in 1.." << ops::kMaxResizeSide);
}

// The normalize_image op's parameters holding kImagenetMean / kImagenetStd.
ops::NormalizeImageParams imagenet_params() {
  ops::NormalizeImageParams p;
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = kImagenetMean[c];
    p.std[c] = kImagenetStd[c];
  }
  return p;
}

// Rows first, then columns: out = sum_y wy * (sum_x wx * in[y][x]), each sum starting from 0 and
// taking the taps in the order kernels/resize_taps.h lists them: the order PyTorch's CPU kernel
// uses for the bilinear case, and the order of the ops' resize_bilinear_forward. `value(p)` turns
// a stored sample into the float the formula sees, so an 8-bit image is resized without first
// materialising a float copy (for a 24-megapixel photo that copy would be 288 MB) while giving
// the same bits as to_float first.
template <typename Sample, typename ToFloat>
ImageF resize_separable(const Sample* pixels, int in_w, const ResampleAxis& ty, const ResampleAxis& tx,
                        ToFloat value) {
  ImageF out;
  out.height = static_cast<int>(ty.outputs());
  out.width = static_cast<int>(tx.outputs());
  out.rgb.assign(std::size_t(out.height) * out.width * 3, 0.0f);
  const std::size_t in_stride = std::size_t(in_w) * 3;
  const auto resize_rows = [&](int64_t row_begin, int64_t row_end) {
    for (int oy = static_cast<int>(row_begin); oy < static_cast<int>(row_end); ++oy) {
      const int32_t ky_begin = ty.start[std::size_t(oy)], ky_end = ty.start[std::size_t(oy) + 1];
      for (int ox = 0; ox < out.width; ++ox) {
        const int32_t kx_begin = tx.start[std::size_t(ox)], kx_end = tx.start[std::size_t(ox) + 1];
        float acc[3] = {0, 0, 0};
        for (int32_t ky = ky_begin; ky < ky_end; ++ky) {
          const Sample* row = pixels + std::size_t(ty.index[std::size_t(ky)]) * in_stride;
          float along_x[3] = {0, 0, 0};
          for (int32_t kx = kx_begin; kx < kx_end; ++kx) {
            const Sample* p = row + std::size_t(tx.index[std::size_t(kx)]) * 3;
            const float wx = tx.weight[std::size_t(kx)];
            for (int c = 0; c < 3; ++c) along_x[c] += wx * value(p[c]);
          }
          const float wy = ty.weight[std::size_t(ky)];
          for (int c = 0; c < 3; ++c) acc[c] += wy * along_x[c];
        }
        float* o = out.rgb.data() + (std::size_t(oy) * out.width + ox) * 3;
        for (int c = 0; c < 3; ++c) o[c] = acc[c];
      }
    }
  };
  // Rows are independent. A row costs about width * 3 * taps_y * taps_x multiply-adds; give each
  // thread at least ~16k of them, or waking it costs more than it saves.
  const int64_t taps = int64_t(ty.outputs() > 0 ? ty.taps(0) : 1) * int64_t(tx.outputs() > 0 ? tx.taps(0) : 1);
  const int64_t row_cost = std::max<int64_t>(1, int64_t(out.width) * 3 * taps);
  parallel_rows(out.height, std::max<int64_t>(1, 16384 / row_cost), resize_rows);
  return out;
}

const auto kAsIs = [](float v) { return v; };
// Exactly to_float's conversion.
const auto kUnitRange = [](uint8_t v) { return static_cast<float>(v) / 255.0f; };

void check_image(const ImageView& im, const char* what) {
  AE_CHECK(im.width > 0 && im.height > 0, what << ": image has no pixels (" << im.width << "x" << im.height << ")");
  AE_CHECK(im.rgb != nullptr, what << ": image " << im.width << "x" << im.height << " has no pixel buffer");
}

const float* pixels_of(const ImageF& im) { return im.rgb.data(); }
const uint8_t* pixels_of(const Image& im) { return im.rgb.data(); }
const uint8_t* pixels_of(const ImageView& im) { return im.rgb; }

template <typename Im>
void check_resize(const Im& im, int out_h, int out_w, const char* what) {
  check_image(im, what);
  check_size(what, out_h, out_w);
}

template <typename Im, typename ToFloat>
ImageF resize(const Im& im, int out_h, int out_w, ResizeFilter filter, ToFloat value) {
  return resize_separable(pixels_of(im), im.width, ops::resample_axis(im.height, out_h, filter),
                          ops::resample_axis(im.width, out_w, filter), value);
}

// An 8-bit image as a u8 [H,W,3] CPU tensor (normalize_image divides by 255 exactly as to_float).
ae::Tensor to_tensor_u8(const ImageView& im) {
  ae::Tensor t = ae::Tensor::empty({im.height, im.width, 3}, DType::u8);
  std::memcpy(t.raw(), im.rgb, std::size_t(im.height) * std::size_t(im.width) * 3);
  return t;
}

// [H,W,3] or [N,H,W,3] with N >= 1, H and W >= 1: the shapes preprocess_eval_ops accepts.
void check_image01_shape(const char* what, const char* arg, const Shape& s) {
  const bool rank_ok = s.size() == 3 || s.size() == 4;
  AE_CHECK(rank_ok && s.back() == 3 && (s.size() == 3 || s[0] >= 1) && s[s.size() - 3] >= 1 && s[s.size() - 2] >= 1,
           what << ": " << arg << " has shape " << shape_str(s)
                << "; expected an RGB image [H,W,3] or a batch [N,H,W,3] (channels last, values in [0,1])");
}

// The network input's [N,OH,OW,3] for an image of shape s (checked) and size.
Shape input_shape(const char* what, const Shape& s, int size) {
  const Shape b = s.size() == 4 ? s : Shape{1, s[0], s[1], s[2]};
  if (size <= 0) return b;
  check_size(what, size, size);
  return Shape{b[0], size, size, 3};
}

}  // namespace

ImageF resize_bilinear(const ImageF& im, int out_h, int out_w) {
  check_resize(im, out_h, out_w, "resize_bilinear");
  if (out_h == im.height && out_w == im.width) return im;  // identity, bit-exact
  return resize(im, out_h, out_w, ResizeFilter::bilinear, kAsIs);
}

ImageF resize_bilinear(const Image& im, int out_h, int out_w) {
  check_resize(im, out_h, out_w, "resize_bilinear");
  if (out_h == im.height && out_w == im.width) return to_float(im);
  return resize(im, out_h, out_w, ResizeFilter::bilinear, kUnitRange);
}

ImageF resize_bilinear_antialias(const ImageF& im, int out_h, int out_w) {
  check_resize(im, out_h, out_w, "resize_bilinear_antialias");
  if (out_h == im.height && out_w == im.width) return im;
  return resize(im, out_h, out_w, ResizeFilter::antialias, kAsIs);
}

ImageF resize_bilinear_antialias(const Image& im, int out_h, int out_w) {
  check_resize(im, out_h, out_w, "resize_bilinear_antialias");
  if (out_h == im.height && out_w == im.width) return to_float(im);
  return resize(im, out_h, out_w, ResizeFilter::antialias, kUnitRange);
}

ae::Tensor to_tensor(const ImageF& im) {
  check_image(im, "to_tensor");
  ae::Tensor t = ae::Tensor::empty({im.height, im.width, 3});
  if (!im.rgb.empty()) std::memcpy(t.raw(), im.rgb.data(), im.rgb.size() * sizeof(float));
  return t;
}

ae::Tensor normalize_imagenet(const ImageF& im) {
  check_image(im, "normalize_imagenet");
  return ops::normalize_image(imagenet_params(), to_tensor(im));
}

ae::Tensor preprocess_eval(const Image& im, int size) {
  check_image(im, "preprocess_eval");
  return preprocess_eval(ImageView{im.width, im.height, im.rgb.data()}, size);
}

ae::Tensor preprocess_eval(const ImageView& im, int size) {
  check_image(im, "preprocess_eval");
  if (size <= 0 || (size == im.height && size == im.width)) {
    // Native size: normalise the 8-bit pixels directly, which is normalize_imagenet(to_float(im))
    // bit for bit without the float copy.
    return ops::normalize_image(imagenet_params(), to_tensor_u8(im));
  }
  // resize_bilinear(Image) without the Image: the same taps on the same 8-bit samples.
  check_size("preprocess_eval", size, size);
  return normalize_imagenet(resize(im, size, size, ResizeFilter::bilinear, kUnitRange));
}

ae::Tensor preprocess_eval_ops(const ae::Tensor& image01, int size) {
  const char* what = "preprocess_eval_ops";
  AE_CHECK(image01.defined(), what << ": image01 is undefined");
  AE_CHECK(image01.dtype() == DType::f32, what << ": image01 " << image01.desc() << " must be f32 (values in [0,1])");
  check_image01_shape(what, "image01", image01.shape());
  const Shape in4 = input_shape(what, image01.shape(), 0);
  const Shape out4 = input_shape(what, image01.shape(), size);
  const ae::Tensor x = image01.reshape(in4);
  // An unchanged size skips the resize, which would be a copy (the op's identity case).
  const ae::Tensor resized =
      out4 == in4 ? x : ops::resize_bilinear_forward(ops::ResizeBilinearParams{out4[1], out4[2]}, x);
  return ops::normalize_image(imagenet_params(), resized);
}

ae::Tensor preprocess_eval_ops_backward(const ae::Tensor& d_input, const ae::Shape& image_shape, int size) {
  const char* what = "preprocess_eval_ops_backward";
  AE_CHECK(d_input.defined(), what << ": d_input is undefined");
  check_image01_shape(what, "image_shape", image_shape);
  const Shape in4 = input_shape(what, image_shape, 0);
  const Shape out4 = input_shape(what, image_shape, size);
  AE_CHECK(d_input.dtype() == DType::f32 && d_input.shape() == out4,
           what << ": d_input " << d_input.desc() << " does not match preprocess_eval_ops's output "
                << shape_str(out4) << " f32 for an image " << shape_str(image_shape) << " at size " << size);
  const ae::Tensor d_resized = ops::normalize_image_backward(imagenet_params(), d_input, out4);
  const ae::Tensor d_image =
      out4 == in4 ? d_resized
                  : ops::resize_bilinear_backward(ops::ResizeBilinearParams{out4[1], out4[2]}, d_resized, in4);
  return d_image.reshape(image_shape);
}

}  // namespace ae::img
