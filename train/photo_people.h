#pragma once
// The demo's data set (`aesthete make-dataset --from-photos DIR`, `aesthete demo`): real photos,
// many edited variants of each, rated 1-5 stars by simulated people who share a sense of quality
// and differ in taste, written in the FLICKR-AES file formats so that the same commands run on the
// real data set.
//
// Why simulated people on real photos: no rated photo set can be downloaded here, and a demo of
// personalisation needs people whose tastes differ in ways a person can see. Each variant is a
// random crop of a source photo with random photo edits (exposure, contrast, saturation, white
// balance) and, for part of them, defects (blur, noise, heavy JPEG compression). Every rater
// likes quality; the test persons add one taste each, defined on a statistic MEASURED on the
// variant's pixels as stored (measure_photo), so a test can measure an edit the same way:
//   warm   likes warm light:        + mean(R - B)
//   vivid  likes vivid colour:      + mean chroma (max - min of R, G, B)
//   moody  likes dark, moody images: - mean luma
// utility u = kQualityWeight * (2 q - 1) + taste_z, with taste_z the statistic standardised over
// the whole set (mean 0, std 1, clamped to [-2.5, 2.5]) and q in [0, 1] the shared quality:
//   q = 1 - (blur sigma / 3 + noise sigma / 0.12 + (1 - jpeg quality / 40 for quality < 40)) / 2
//         - 2 * clipped - 2 * max(0, 0.3 - luma), clamped to [0, 1]
// where clipped is the measured fraction of pixels with luma <= 0.02 or >= 0.98 and luma the
// measured mean luma: blown highlights and murky, under-exposed photos are both badly exposed.
// stars = round(clamp(3 + kStarScale * u + N(0, noise), 1, 5)), stored as z with the FLICKR-AES
// normalisation (model::TargetNorm), like the real files.
//
// The generic training labels are the mean z of anonymous raters in opposite pairs (+warm and
// -warm, +vivid and -vivid, +moody and -moody, ...): their tastes cancel, so the generic label is
// a function of quality plus noise, as FLICKR-AES's means hide individual tastes, and no single
// model can serve the test persons as well as a personalised one.
//
// Files under DIR, with images for training and for the people disjoint (FLICKR-AES test workers
// rate images outside the training set), and whole photos held out of both (to be enhanced):
//   images/<photo>_vNNN.jpg            the variants (long side `side`), JPEG
//   train_means_normalized.csv         FLICKR-AES means format: the generic training labels
//   test_workers_dataset_normalized.csv FLICKR-AES per-worker format: the test persons' ratings
//   attributes.csv                     per variant: the edits, the defects, the measured
//                                      statistics and q (the ground truth, for reports and tests)
//   held-out/<photo>.jpg               the held-out photos, clean, long side at most 640
// The same config and photos give byte-identical files; every file is written atomically.
#include <cstdint>
#include <string>
#include <vector>

#include "train/image.h"

namespace ae::data {

struct PhotoPeopleConfig {
  std::string photos_dir;                 // the source photos (JPEG or PNG)
  std::vector<std::string> photos;        // file names in photos_dir to make variants of
  std::vector<std::string> held_out;      // file names in photos_dir kept out of every rating
  int variants_per_photo = 90;            // edited variants of each photo
  int people_variants_per_photo = 30;     // of which this many (the last) form the persons' pool
  int side = 160;                         // long side of a stored variant
  int ratings_per_person = 200;           // distinct variants each test person rates (<= pool)
  int train_raters = 6;                   // anonymous raters (opposite pairs) behind a generic label
  double noise = 0.35;                    // rating noise std in star units before rounding
  uint64_t seed = 1;
};

struct PhotoPeopleDataset {
  std::string images_dir, train_csv, workers_csv, attributes_csv, held_out_dir;
  std::vector<std::string> people;        // the worker ids of workers_csv
  std::vector<std::string> held_out;      // paths of the held-out photos as written
  int train_images = 0, people_images = 0;
};

// The photos of Debian's packages the demo uses by default (scripts/fetch_test_photos.sh and
// `aesthete demo` fetch them): variants are made of these ...
std::vector<std::string> default_demo_photos();
// ... and these are held out (enhanced and explained on the demo's page).
std::vector<std::string> default_held_out_photos();

// Throws ae::Error naming the photo or the setting for anything that cannot make the set (a
// missing or unreadable photo, a photo listed twice, too small a pool for the ratings, ...).
PhotoPeopleDataset make_photo_people_dataset(const std::string& dir, const PhotoPeopleConfig& config);

// ---- the ground truth, for reports and tests ----
struct PhotoStats {
  double luma = 0;      // mean of (0.299 R + 0.587 G + 0.114 B) / 255
  double warmth = 0;    // mean of (R - B) / 255
  double chroma = 0;    // mean of (max(R,G,B) - min(R,G,B)) / 255
  double clipped = 0;   // fraction of pixels with luma <= 0.02 or >= 0.98
};
PhotoStats measure_photo(const img::Image& im);

// {"warm", "vivid", "moody"}, in the order of the workers file.
std::vector<std::string> photo_people_names();
// The statistic a test person's taste is about, signed so that larger is more to their liking
// (warm: warmth, vivid: chroma, moody: -luma). Throws ae::Error for an unknown person.
double photo_person_taste(const std::string& person, const PhotoStats& s);
// What that statistic is, in words ("warmth: mean R - B", ...), for reports.
std::string photo_person_taste_name(const std::string& person);

}  // namespace ae::data
