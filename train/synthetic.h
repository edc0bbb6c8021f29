#pragma once
// A generated photo data set whose score is a known function of the image, for end-to-end
// training tests and the demo: each image has a random palette and shapes, and its z-score is
// a fixed function of its overall brightness, so a model that learns anything learns that.
#include <cstdint>
#include <string>

namespace ae::data {

struct SyntheticConfig {
  int count = 200;
  int width = 48, height = 40;
  uint64_t seed = 1;
};

// Writes DIR/img_00000.png ... and DIR/labels.csv (image,score). Returns the CSV path.
std::string make_synthetic_dataset(const std::string& dir, const SyntheticConfig& config);

// The ground truth: z = clamp(4 * (mean luma - 0.5), -1.8, 1.8), luma = (0.299 R + 0.587 G + 0.114 B)/255.
double synthetic_score(double mean_luma);

}  // namespace ae::data
