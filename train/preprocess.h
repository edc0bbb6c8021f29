#pragma once
// Resizing and eval preprocessing of decoded photos: the one preprocessing definition that
// scoring (`aesthete score`, preprocess_eval), training (train/transforms.cpp, resize_bilinear)
// and the differentiable path of saliency and enhancement (preprocess_eval_ops) share
// (DESIGN.md, "Input gradients"). The resize weights of all of them come from
// kernels/resize_taps.h and nowhere else; the normalisation is the normalize_image op with
// kImagenetMean / kImagenetStd; so the score that enhancement maximises is the score that
// `aesthete score` prints, bit for bit on the CPU.
//
// resize_bilinear matches PyTorch 1.13 exactly in definition, and in value to 1-2 float ulps
// (same weights bit for bit, same summation order):
//   torch.nn.functional.interpolate(x, size=(out_h, out_w), mode='bilinear',
//                                   align_corners=False, antialias=False)
// on the [1,3,H,W] float tensor holding the same values. That is: half-pixel centres, source
// coordinate (o + 0.5) * in/out - 0.5 clamped below at 0, the two neighbours clamped to the edge,
// no antialiasing filter when shrinking. When the size is unchanged the result is the input, bit
// for bit. It is the ops' resize_bilinear_forward (kernels/ops.h) on the same floats, bit for bit
// on the CPU: same taps (ops::bilinear_axis), same summation order.
//
// resize_bilinear_antialias matches the same call with antialias=True (PIL-style triangle filter
// widened by the scale factor when shrinking; equal to plain bilinear, up to rounding, when
// enlarging). Its taps (ops::resample_axis(..., ResizeFilter::antialias)) live in
// kernels/resize_taps.h beside the bilinear ones, but it has no op and no backward: it is not part
// of the preprocessing definition (preprocess_eval, the training transforms and
// preprocess_eval_ops all resize to the network input with the plain bilinear filter). It is a
// host-side utility, e.g. for shrinking a large photo to a working copy; whatever is done to a
// photo before preprocess_eval_ops is outside the "same score as `aesthete score`" guarantee.
//
// preprocess_eval squashes (no aspect-ratio preservation, no crop) to size x size and normalises
// with the ImageNet mean and std, which equals torchvision's
//   Normalize(mean, std)(F.interpolate(ToTensor()(img)[None], (size, size), mode='bilinear',
//                                      align_corners=False, antialias=False))
// laid out NHWC. Note that torchvision's transforms.Resize on a PIL image (which resizes 8-bit
// pixels with PIL's antialiasing filter) is a different operation and differs by a few levels.
#include "runtime/tensor.h"
#include "train/image.h"

namespace ae::img {

inline constexpr float kImagenetMean[3] = {0.485f, 0.456f, 0.406f};
inline constexpr float kImagenetStd[3] = {0.229f, 0.224f, 0.225f};

ImageF resize_bilinear(const ImageF& im, int out_h, int out_w);
ImageF resize_bilinear_antialias(const ImageF& im, int out_h, int out_w);
// The same on an 8-bit image: bit for bit resize(to_float(im)), without the full-size float copy.
ImageF resize_bilinear(const Image& im, int out_h, int out_w);
ImageF resize_bilinear_antialias(const Image& im, int out_h, int out_w);

// (x - mean[c]) / std[c] per channel; returns a [1,H,W,3] f32 CPU tensor.
ae::Tensor normalize_imagenet(const ImageF& im);

// to_float -> resize_bilinear to size x size (size <= 0: native size) -> normalize_imagenet.
ae::Tensor preprocess_eval(const Image& im, int size);

// An 8-bit image in Image's layout (height x width x 3, interleaved, contiguous) held by someone
// else, e.g. a numpy array: preprocess_eval reads it in place (no copy of the photo is made; the
// resize reads the 8-bit samples directly), with the same bits as preprocess_eval(Image).
struct ImageView {
  int width = 0, height = 0;
  const uint8_t* rgb = nullptr;
};
ae::Tensor preprocess_eval(const ImageView& im, int size);

// The floats of an ImageF as an f32 [H,W,3] CPU tensor (a copy), e.g. for preprocess_eval_ops.
ae::Tensor to_tensor(const ImageF& im);

// ---- the differentiable eval preprocessing (saliency, enhancement) ----
// preprocess_eval as ops (ops::resize_bilinear_forward, then ops::normalize_image with the
// ImageNet statistics), so it runs on the CPU and CUDA backends and has a backward.
//   image01: f32 [H,W,3] or [N,H,W,3], values nominally in [0,1] (not checked: an optimiser may
//            step outside), on any device; each of the N images is preprocessed alone.
//   returns: f32 [N,size,size,3] (N = 1 for [H,W,3]; size <= 0: the native H x W) on
//            image01's device.
// On the CPU, preprocess_eval_ops(to_tensor(to_float(im)), size) equals preprocess_eval(im, size)
// bit for bit (tests/unit/test_preprocess_ops.cpp); on CUDA it agrees to a float rounding or two
// (nvcc may fuse multiply-adds).
ae::Tensor preprocess_eval_ops(const ae::Tensor& image01, int size);
// The adjoint of preprocess_eval_ops (the map is affine, so its Jacobian does not depend on the
// image): d_input [N,size,size,3] (or native size for size <= 0), the gradient with respect to
// preprocess_eval_ops(image01, size), gives d image01 with image_shape (image01.shape(), 3-d or
// 4-d), on d_input's device. Deterministic (a gather, no atomics).
ae::Tensor preprocess_eval_ops_backward(const ae::Tensor& d_input, const ae::Shape& image_shape, int size);

}  // namespace ae::img
