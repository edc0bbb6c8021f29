#pragma once
// A generated photo data set whose score is a known function of the image, for end-to-end
// training tests and the demo: each image has a random palette and shapes, and its z-score is
// a fixed function of its overall brightness, so a model that learns anything learns that.
// Below it, a set rated by simulated people of opposite, known tastes (make_people_dataset).
#include <cstdint>
#include <string>
#include <vector>

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

// ---------------------------------------------------------------------------------------------
// Simulated people with opposite, known tastes (for the personalisation tests).
//
// Why: personalisation (residual adapters trained on k ~ 100 of one person's ratings) only shows
// its worth on data where no single generic model can serve everyone. Here each image has three
// latent attributes, drawn seeded (philox), and every simulated rater's utility is
//     u = 0.5 * quality_c + (personal term on brightness_c and warmth_c)
// with the centred attributes brightness_c = (brightness - 0.5) / 0.25, warmth, quality_c =
// 2 * quality - 1, all in [-1, 1]. The named test persons have strong opposite personal terms
// ("bright": +brightness_c, "dark": -brightness_c, "warm": +warmth, "cool": -warmth), so a model
// that pleases "bright" must displease "dark": the best a generic model can do for either is the
// shared quality term, while a personalised model can learn the personal one as well.
//
// The generic training labels come from `train_raters` anonymous raters in opposite pairs: pair
// k likes the direction (cos t_k, sin t_k) in the (brightness_c, warmth) plane, t_k = pi k / pairs,
// and its partner the exact opposite (an odd last rater has no personal term). Their personal
// terms cancel, so the mean rating is a function of shared quality (plus noise) and is close to
// uncorrelated with brightness and warmth, as FLICKR-AES means hide individual tastes.
//
// Ratings: stars = round(clamp(3 + 1.4 * u + N(0, noise), 1, 5)), stored as z = (stars - mean) /
// std with the FLICKR-AES normalisation (model::TargetNorm), like the real per-worker file.
//
// The attributes are chosen to be visible to a small CNN at 32-48 px:
//   brightness: the image's target mean luma (0.299 R + 0.587 G + 0.114 B, in [0.25, 0.75]); the
//               rendered image is scaled to it, so measured mean luma tracks it closely.
//   warmth:     in [-1, 1], the image's mean R - B balance: a luma-neutral colour shift (towards
//               yellow-orange for w > 0, blue for w < 0) cancels the palette's own balance and
//               sets it to 0.24 w, so R - B measured on the image tracks w closely.
//   quality:    in [0, 1]; clean (1) vs noisy and blocky (0): per-pixel colour noise of amplitude
//               0.01 + 0.15 (1 - q) plus 4x4 block offsets of amplitude 0.10 (1 - q). Noise is
//               what a small CNN picks up first at 32-48 px, and it is independent of the scene.
// Images are drawn like make_synthetic_dataset's (vertical gradient + accent discs).
//
// Files, with disjoint images for training and for the people (as FLICKR-AES test workers rate
// images outside the training set): images 0 .. count - people_images - 1 are the generic
// training set, the last `people_images` are rated only by the test persons, each rating
// `ratings_per_person` distinct ones drawn seeded from that pool.
//   DIR/images/img_NNNNN.png
//   DIR/train.csv    plain `image,score` (score = mean z over the anonymous raters)
//   DIR/workers.csv  FLICKR-AES per-worker format (train/labels.h), worker ids = person names
// The same config gives byte-identical files; every file is written atomically.

struct PeopleConfig {
  int count = 600;               // images in all (training part + people_images)
  int width = 40, height = 32;   // small: tests train at 32-48 px on a 2-core CPU
  int train_raters = 8;          // anonymous raters whose mean rating is the generic training label
  int ratings_per_person = 150;  // images each test person rates (distinct images, drawn seeded)
  int people_images = 200;       // the last images, rated only by the test persons (>= ratings_per_person)
  double noise = 0.35;           // rating noise std in star units before rounding
  uint64_t seed = 1;
};

struct PeopleDataset {
  std::string images_dir, train_csv, workers_csv;
  std::vector<std::string> people;  // the worker ids in workers_csv
};

// The smallest generic training part accepted (count - people_images).
inline constexpr int kMinPeopleTrainImages = 10;

// Writes the data set described above. Throws ae::Error for a config that cannot hold it (too
// small a count for the reserved people images plus kMinPeopleTrainImages, ratings_per_person
// above people_images, no raters, images under 8x8, negative noise).
PeopleDataset make_people_dataset(const std::string& dir, const PeopleConfig& config);

// ---- ground truth, for tests ----
struct LatentAttributes {
  double brightness = 0.5;  // target mean luma, [0.25, 0.75]
  double warmth = 0;        // [-1, 1], + = warm (red/orange) cast, - = cool (blue)
  double quality = 0.5;     // [0, 1], 1 = clean
};

// The test persons, in workers_csv order: {"bright", "dark", "warm", "cool"}.
std::vector<std::string> people_names();
// Image `index`'s attributes (a pure function of config.seed and index).
LatentAttributes people_attributes(const PeopleConfig& config, int index);
// The noise-free utility of a test person (throws ae::Error naming the known persons otherwise).
double people_utility(const std::string& person, const LatentAttributes& a);
// "img_00042.png" (relative to images_dir).
std::string people_image_name(int index);
// Index of the first image reserved for the people (= count - people_images).
int people_first_image(const PeopleConfig& config);

}  // namespace ae::data
