#pragma once
// Saliency maps (DESIGN.md "Enhancement and saliency"): where in a photo the predicted score of
// the model (generic, or a person's state bound onto it) is sensitive, as the original computed
// it (seed-system.md §7) with its SmoothGrad bugs fixed.
//
// The vanilla map is the gradient of the predicted score with respect to the network input (the
// photo squash-resized to size x size and ImageNet-normalised, exactly the input `aesthete score`
// scores: img::preprocess_eval), computed by ResNet18::input_gradient; its positive part; the max
// over the 3 channels. A size x size map, >= 0.
//
// SmoothGrad (Smilkov et al. 2017) averages the input GRADIENTS over N noisy copies of the input
// and then takes the positive part and the channel max, as the original did. The noise:
//   - Gaussian, sigma = noise * (max - min) of the size x size [0,1] image (all channels), drawn
//     per pixel and channel from the Philox stream `seed` (runtime/philox.h; Box-Muller), so the
//     same seed gives the same map, on any device;
//   - added in [0,1] pixel units to the squash-resized image (at the network's resolution: noise on
//     the network input, as SmoothGrad defines it; adding it to the full-size photo first would let
//     the resize average part of it away), each noisy pixel CLIPPED to [0,1] (the original cast
//     to uint8, which wrapped 256 round to 0), then normalised with the ImageNet mean and std,
//     i.e. the noise is noise/std[c] in normalised units before the clip's bound;
//   - with noise 0 the copies are the clean input (no clip), so N = 1 and noise 0 give the
//     vanilla map bit for bit.
//
// Versus generic: the bound state's map minus the generic model's map (same photo, same noise
// copies), signed: positive where the person's model is more sensitive than the generic one.
// The generic state is bound for the second map, and the state bound before is bound again
// afterwards (also when a step fails).
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "model/shared_model.h"
#include "runtime/stop.h"
#include "train/image.h"

namespace ae::train {

struct SaliencyOptions {
  int size = 224;          // network input side (> 0): the photo is squash-resized to size x size
  int smoothgrad = 0;      // 0: the vanilla gradient; N >= 1: SmoothGrad over N noisy copies
  double noise = 0.15;     // SmoothGrad sigma as a fraction of (max - min) of the [0,1] input image
  uint64_t seed = 0;       // SmoothGrad noise stream
  bool versus_generic = false;  // the bound state's map minus the generic model's map
  int batch = 8;           // noisy copies per input-gradient pass (memory vs speed only)
  // On a CUDA device the full SmoothGrad batches replay one captured input-gradient pass
  // (model::GraphedFunction), with the eager passes' bits. No effect on the CPU.
  bool cuda_graphs = true;
  const StopFlag* stop = nullptr;  // checked before every pass (runtime/stop.h): ends the call with an
                                   // ae::Error of kind interrupted; nullptr: never
};

struct SaliencyResult {
  int size = 0;            // the map is size x size, the network input's resolution
  std::vector<float> map;  // row-major, size*size; >= 0, or signed for versus_generic
  bool is_signed = false;  // versus_generic
  double score = 0;        // predicted z of the bound state on the clean photo (what `score` prints)
  double generic_score = std::numeric_limits<double>::quiet_NaN();  // versus_generic: the generic z
  double noise_sigma = 0;  // SmoothGrad noise sigma in [0,1] pixel units (0 for vanilla)
  int64_t graph_replays = 0;  // input-gradient passes run as CUDA graph replays (SaliencyOptions::cuda_graphs)

  float max_abs() const;   // max |map|
};

// The map of `photo` for the state bound to `shared` (see the file comment). Throws ae::Error for
// an ImageNet-classifier model, a bad size, smoothgrad < 0, or noise < 0 or not finite.
SaliencyResult compute_saliency(model::SharedModel& shared, const img::Image& photo, const SaliencyOptions& o);

// ---- rendering ----

// The map resized to out_h x out_w with bilinear interpolation (half-pixel centres, edges clamped:
// the inverse of the squash-resize, so each map cell lands on the photo area it came from).
std::vector<float> upsample_map(const std::vector<float>& map, int map_h, int map_w, int out_h, int out_w);

// The heat-map overlay at the photo's own size: the map upsampled to it and coloured, blended over
// a dimmed, desaturated copy of the photo. Plain maps use viridis (0 dark purple -> max yellow),
// with a colour strength that grows with the value so that low-saliency regions show the photo;
// signed maps use a diverging blue-white-red map centred at 0 (blue: the generic model is more
// sensitive there, red: the person's) with strength |value|. Colours are scaled to the 99.5th
// percentile of |map| (a few spiky gradients would otherwise make every other pixel look zero);
// the raw PNG keeps the exact numbers.
img::Image saliency_overlay(const img::Image& photo, const SaliencyResult& r);

// ---- the raw map as numbers: a 16-bit grayscale PNG at the network's resolution ----
// sample = round(map / scale * 65535) for a plain map, 32768 + round(map / scale * 32767) for a
// signed one, scale = max |map| (0 for an all-zero map, every sample then at zero). Text chunks:
//   aesthete:scale   the scale, %.9g
//   aesthete:zero    0 or 32768: the sample that means 0
//   aesthete:kind    "saliency" or "saliency-versus-generic"
//   aesthete:score   the predicted z (and aesthete:generic_score for versus-generic)
//   Description      the formula: value = (sample - zero) / (65535 - zero) * scale
// Reading back is exact to half a step: |error| <= scale / 131070 (plain), scale / 65534 (signed).
inline constexpr const char* kSaliencyScaleKey = "aesthete:scale";
inline constexpr const char* kSaliencyZeroKey = "aesthete:zero";
img::Gray16Image saliency_raw_png(const SaliencyResult& r);

struct SaliencyRaw {
  int width = 0, height = 0;
  std::vector<float> values;  // row-major
  double scale = 0;
  bool is_signed = false;
};
// The numbers of a raw map PNG (decoded by img::decode_png_gray16 / read_png_gray16); an ae::Error
// naming `name` when the text chunks are missing or malformed.
SaliencyRaw saliency_from_raw_png(const img::Gray16Image& im, const std::string& name);

}  // namespace ae::train
