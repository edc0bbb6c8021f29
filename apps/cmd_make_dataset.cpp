// aesthete make-dataset: a generated photo set with a known score function (tests), with --people
// a generated set rated by simulated people of opposite tastes (personalisation tests), or with
// --from-photos the demo's set: variants of real photos rated by simulated people, in the
// FLICKR-AES formats.
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "runtime/atomic_file.h"
#include "runtime/log.h"
#include "train/photo_people.h"
#include "train/synthetic.h"

namespace ae::app {

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : text + ",") {
    if (ch != ',') {
      cur += ch;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

struct Args {
  data::SyntheticConfig synthetic;
  data::PeopleConfig people;
  data::PhotoPeopleConfig photos;
  std::string dir, photo_list, held_out_list;
  bool people_set = false;
};

void run_from_photos(Args& a) {
  if (!a.photo_list.empty()) a.photos.photos = split_list(a.photo_list);
  if (!a.held_out_list.empty()) a.photos.held_out = split_list(a.held_out_list == "none" ? "" : a.held_out_list);
  const data::PhotoPeopleDataset d = data::make_photo_people_dataset(a.dir, a.photos);
  AE_INFO("wrote " << d.train_images << " variants for generic training (rated by " << a.photos.train_raters
                   << " anonymous raters), " << d.people_images << " for the people ("
                   << a.photos.ratings_per_person << " ratings each by warm, vivid, moody) and "
                   << d.held_out.size() << " held-out photos");
  std::printf("%s\n%s\n%s\n%s\n", d.images_dir.c_str(), d.train_csv.c_str(), d.workers_csv.c_str(),
              d.held_out_dir.c_str());
}

}  // namespace

void add_make_dataset_command(CLI::App& app) {
  auto a = std::make_shared<Args>();
  a->photos.photos = data::default_demo_photos();
  a->photos.held_out = data::default_held_out_photos();
  CLI::App* cmd = app.add_subcommand(
      "make-dataset",
      "Write a generated data set (PNG + labels.csv) whose score is a known function of brightness; with "
      "--people, one rated by simulated people of opposite tastes (images/, train.csv, workers.csv); with "
      "--from-photos DIR, variants of real photos rated by simulated people (the demo's set, FLICKR-AES formats)");
  cmd->add_option("--out", a->dir, "Folder to write")->required();
  auto* people = cmd->add_flag("--people", a->people_set,
                               "Write the simulated-people set instead: generic labels in train.csv, the test persons "
                               "(bright, dark, warm, cool) in the FLICKR-AES per-worker format in workers.csv");
  auto* from = cmd->add_option("--from-photos", a->photos.photos_dir,
                               "Make the demo's set from the photos in this folder: edited variants rated by "
                               "anonymous raters (train_means_normalized.csv) and by the persons warm, vivid and "
                               "moody (test_workers_dataset_normalized.csv)");
  from->excludes(people);
  cmd->add_option("--count", a->synthetic.count, "Images (default 200; 600 with --people)");
  cmd->add_option("--width", a->synthetic.width, "Image width (default 48; 40 with --people)");
  cmd->add_option("--height", a->synthetic.height, "Image height (default 40; 32 with --people)");
  cmd->add_option("--seed", a->synthetic.seed)->capture_default_str();
  cmd->add_option("--train-raters", a->people.train_raters,
                  "--people/--from-photos: anonymous raters behind each training label (default 8 / 6)");
  cmd->add_option("--ratings-per-person", a->people.ratings_per_person,
                  "--people/--from-photos: images each test person rates (default 150 / 200)");
  cmd->add_option("--people-images", a->people.people_images,
                  "--people: the last images, reserved for the test persons")
      ->capture_default_str();
  cmd->add_option("--noise", a->people.noise, "--people/--from-photos: rating noise std in stars")->capture_default_str();
  cmd->add_option("--photos", a->photo_list, "--from-photos: comma-separated photo files to make variants of (default: "
                                             "the demo's)");
  cmd->add_option("--held-out", a->held_out_list,
                  "--from-photos: comma-separated photo files held out of every rating, or none (default: the demo's)");
  cmd->add_option("--variants", a->photos.variants_per_photo, "--from-photos: edited variants per photo")
      ->capture_default_str();
  cmd->add_option("--people-variants", a->photos.people_variants_per_photo,
                  "--from-photos: of which this many per photo form the people's pool")
      ->capture_default_str();
  cmd->add_option("--side", a->photos.side, "--from-photos: long side of a variant in pixels")->capture_default_str();
  cmd->callback([a, cmd] {
    const bool photos = cmd->count("--from-photos") > 0;
    if (!a->people_set && !photos)
      for (const char* flag : {"--train-raters", "--ratings-per-person", "--people-images", "--noise"})
        if (cmd->count(flag) > 0) throw CLI::ValidationError(flag, "only applies with --people or --from-photos");
    if (!photos)
      for (const char* flag : {"--photos", "--held-out", "--variants", "--people-variants", "--side"})
        if (cmd->count(flag) > 0) throw CLI::ValidationError(flag, "only applies with --from-photos");
    if (photos)
      for (const char* flag : {"--count", "--width", "--height", "--people-images"})
        if (cmd->count(flag) > 0) throw CLI::ValidationError(flag, "does not apply with --from-photos");
    prepare_output_dir(a->dir, "--out");  // a clear refusal before anything is generated
    if (photos) {
      if (cmd->count("--train-raters") > 0) a->photos.train_raters = a->people.train_raters;
      if (cmd->count("--ratings-per-person") > 0) a->photos.ratings_per_person = a->people.ratings_per_person;
      if (cmd->count("--noise") > 0) a->photos.noise = a->people.noise;
      a->photos.seed = a->synthetic.seed;
      run_from_photos(*a);
      return;
    }
    if (!a->people_set) {
      const std::string csv = data::make_synthetic_dataset(a->dir, a->synthetic);
      AE_INFO("wrote " << a->synthetic.count << " images and " << csv);
      return;
    }
    // Shared options override the people defaults only when given.
    data::PeopleConfig& p = a->people;
    if (cmd->count("--count") > 0) p.count = a->synthetic.count;
    if (cmd->count("--width") > 0) p.width = a->synthetic.width;
    if (cmd->count("--height") > 0) p.height = a->synthetic.height;
    p.seed = a->synthetic.seed;
    const data::PeopleDataset d = data::make_people_dataset(a->dir, p);
    AE_INFO("wrote " << p.count << " images rated by " << p.train_raters << " anonymous raters and "
                     << d.people.size() << " test persons");
    std::printf("%s\n%s\n%s\n", d.images_dir.c_str(), d.train_csv.c_str(), d.workers_csv.c_str());
  });
}

}  // namespace ae::app
