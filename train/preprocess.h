#pragma once
// Resizing and eval preprocessing of decoded photos.
//
// resize_bilinear matches PyTorch 1.13 exactly in definition, and in value to 1-2 float ulps
// (same weights bit for bit, same summation order):
//   torch.nn.functional.interpolate(x, size=(out_h, out_w), mode='bilinear',
//                                   align_corners=False, antialias=False)
// on the [1,3,H,W] float tensor holding the same values. That is: half-pixel centres, source
// coordinate (o + 0.5) * in/out - 0.5 clamped below at 0, the two neighbours clamped to the edge,
// no antialiasing filter when shrinking. When the size is unchanged the result is the input, bit
// for bit. resize_bilinear_antialias matches the same call with antialias=True (PIL-style
// triangle filter widened by the scale factor when shrinking; equal to plain bilinear when
// enlarging).
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

}  // namespace ae::img
