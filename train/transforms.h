#pragma once
// Training and evaluation transforms, per sample. Randomness comes from the counter-based RNG
// keyed by (seed, epoch, sample index), so a sample is augmented the same way whichever worker
// thread decodes it, and a resumed run replays exactly.
//
//   squash (the original system): train = resize to resize_to x resize_to ignoring aspect,
//          random horizontal flip (p = 0.5), random size x size crop with offsets 0 .. resize_to-size-1
//          (numpy's randint(0, 32) for 256 -> 224); eval = resize straight to size x size.
//   aspect: train = resize the shorter side to resize_to keeping aspect, flip, random crop;
//           eval = shorter side to resize_to, centre crop size x size.
// Then ImageNet normalisation. Output: NHWC floats, size x size x 3.
#include <cstdint>
#include <string>
#include <vector>

#include "train/image.h"

namespace ae::data {

enum class ResizeMode { squash, aspect };
ResizeMode parse_resize_mode(const std::string& text);

struct TransformConfig {
  int size = 224;        // network input side
  int resize_to = 256;   // train-time resize before the random crop
  ResizeMode mode = ResizeMode::squash;
  bool train = true;     // augment (flip + random crop) or evaluate (deterministic)
};

// Writes size*size*3 normalised floats to `out`.
void apply_transform(const img::Image& im, const TransformConfig& cfg, uint64_t seed, uint64_t epoch,
                     uint64_t sample, float* out);

}  // namespace ae::data
