#pragma once
// Enhancement (`aesthete enhance`): real gradient ascent on the predicted score of the bound model
// (generic or one person's), the thing the original system claimed and did not do
// (shared/reference/seed-system.md §6: it applied a fixed contrast stretch and never used the
// gradient). DESIGN.md "Enhancement and saliency".
//
// The photo is worked on at a bounded resolution (the long side at most max_side, shrunk with an
// antialiasing filter so that the edit is not tuned to aliasing) and the result is carried to the
// full-size photo, so a 24-megapixel photo costs what a 512-pixel one costs. The score maximised is
// therefore the working image's; the scores reported before and after (score_photo) are the ones
// `aesthete score` prints for the full-size photos. The image-space ops (ops::photo_edit_*, the
// preprocessing ops) are called directly: they are not network layers, so DESIGN.md's "train/ calls
// layers" does not cover them.
// Every step's score comes from the input-gradient pass (ResNet18::input_gradient) through the
// differentiable preprocessing (img::preprocess_eval_ops, the same resize and normalisation that
// `aesthete score` uses). A step is accepted only if it raises the score; a rejected step halves the
// step size. So the score never falls across accepted steps.
//
// Modes:
//   global  ascent on a few photo-edit parameters (ops::photo_edit_forward): exposure (stops),
//           contrast, saturation, temperature, tint (log scales) and a monotone tone curve, then the
//           same edit applied to the full-size photo. Each parameter i stays within
//           [-epsilon * kRecipeBounds[i], +epsilon * kRecipeBounds[i]]: epsilon = 1 allows +-1 stop
//           of exposure, contrast and saturation x e^+-0.5, temperature x e^+-0.3 on red/blue, tint
//           x e^+-0.15 on green, and tone knots moving up to tanh(1.5) of their half-range. Default
//           0.4. The parameters are the edit recipe (a JSON file a person can read and re-apply).
//   pixels  projected ascent on the pixels within an L-infinity budget: no channel of any pixel
//           moves by more than epsilon (in [0,1] units: 8/255 = 0.031 is the default), at working
//           resolution; the change is upsampled (bilinear) and added to the full-size photo. Pixel
//           ascent can raise a network's score with noise no person would call better, so the
//           gradient is averaged over `eot` random crops and flips (expectation over
//           transformations), and the gain should be checked under a model the edit was not
//           optimised on.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/shared_model.h"
#include "runtime/stop.h"
#include "train/image.h"

namespace ae::train {

enum class EnhanceMode { global, pixels };
EnhanceMode parse_enhance_mode(const std::string& text);
const char* enhance_mode_name(EnhanceMode m);

inline constexpr int kToneKnots = 4;
// Per-parameter bounds at epsilon = 1: exposure, contrast, saturation, temperature, tint, tone knots.
inline constexpr double kRecipeBounds[5 + kToneKnots] = {1.0, 0.5, 0.5, 0.3, 0.15, 1.5, 1.5, 1.5, 1.5};

struct EnhanceOptions {
  EnhanceMode mode = EnhanceMode::global;
  double epsilon = -1;  // < 0: 0.4 (global) or 8/255 (pixels)
  int steps = 10;
  int max_side = 512;   // working resolution: the long side
  int size = 224;       // network input side (squash, as `score`)
  int eot = 1;          // pixels: gradients averaged over this many random crops/flips (1 = none)
  uint64_t seed = 0;
  // On a CUDA device the steps' input-gradient passes of one shape replay one captured graph
  // (model::GraphedFunction: the global mode's every step, the pixel mode's plain gradients; the
  // --eot crops, each of its own shape, run eagerly), with the eager passes' bits. No effect on the CPU.
  bool cuda_graphs = true;
  const StopFlag* stop = nullptr;  // checked before every step (runtime/stop.h): ends the call with an
                                   // ae::Error of kind interrupted; nullptr: never
};

// A recipe is about 1 kB; a larger file is refused before it is read (apply-recipe).
inline constexpr uint64_t kMaxRecipeBytes = 1 << 20;

// The global mode's parameters, readable (JSON) and re-appliable.
struct EditRecipe {
  double exposure = 0, contrast = 0, saturation = 0, temperature = 0, tint = 0;
  std::vector<double> tone;  // kToneKnots tone-curve knot parameters
  double epsilon = 0.4;

  std::vector<float> theta() const;
  static EditRecipe from_theta(const std::vector<float>& theta, double epsilon);
  // {"format": "aesthete-edit-recipe", "version": 1, "exposure_stops": ..., ...} plus the numbers
  // of `extra` (scores before and after) as further members.
  std::string to_json(const std::vector<std::pair<std::string, double>>& extra = {}) const;
  // Every field checked: type, finite, within the bounds of its epsilon; errors name `origin`.
  static EditRecipe from_json(const std::string& text, const std::string& origin);
};

struct EnhanceResult {
  img::Image image;                // full size
  std::vector<double> scores;      // working-resolution score after each accepted step (z); [0] = start
  int accepted = 0, rejected = 0;
  EditRecipe recipe;               // global mode
  double max_change = 0;           // pixels: the largest per-channel change applied (in [0,1] units)
  int64_t graph_replays = 0;       // input-gradient passes run as CUDA graph replays (EnhanceOptions::cuda_graphs)
};

// Enhances `photo` for the model state bound to `shared` (the caller binds a user or the generic state).
EnhanceResult enhance(model::SharedModel& shared, const img::Image& photo, const EnhanceOptions& options);

// The recipe's edit applied to a full-size photo (in row strips: memory bounded by the photo itself).
img::Image apply_recipe(const img::Image& photo, const EditRecipe& recipe);

// The score `aesthete score` prints for `photo` under the bound state (z).
double score_photo(model::SharedModel& shared, const img::Image& photo, int size);

}  // namespace ae::train
