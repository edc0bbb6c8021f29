// aesthete make-dataset: a generated photo set with a known score function (tests, demo), or
// with --people a set rated by simulated people of opposite, known tastes (personalisation tests).
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "runtime/log.h"
#include "train/synthetic.h"

namespace ae::app {

void add_make_dataset_command(CLI::App& app) {
  auto c = std::make_shared<data::SyntheticConfig>();
  auto p = std::make_shared<data::PeopleConfig>();
  auto dir = std::make_shared<std::string>();
  auto people = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "make-dataset",
      "Write a generated data set (PNG + labels.csv) whose score is a known function of brightness; with "
      "--people, one rated by simulated people of opposite tastes (images/, train.csv, workers.csv)");
  cmd->add_option("--out", *dir, "Folder to write")->required();
  cmd->add_flag("--people", *people,
                "Write the simulated-people set instead: generic labels in train.csv, the test persons "
                "(bright, dark, warm, cool) in the FLICKR-AES per-worker format in workers.csv");
  cmd->add_option("--count", c->count, "Images (default 200; 600 with --people)");
  cmd->add_option("--width", c->width, "Image width (default 48; 40 with --people)");
  cmd->add_option("--height", c->height, "Image height (default 40; 32 with --people)");
  cmd->add_option("--seed", c->seed)->capture_default_str();
  cmd->add_option("--train-raters", p->train_raters, "--people: anonymous raters behind each training label")
      ->capture_default_str();
  cmd->add_option("--ratings-per-person", p->ratings_per_person, "--people: images each test person rates")
      ->capture_default_str();
  cmd->add_option("--people-images", p->people_images,
                  "--people: the last images, reserved for the test persons")
      ->capture_default_str();
  cmd->add_option("--noise", p->noise, "--people: rating noise std in stars")->capture_default_str();
  cmd->callback([c, p, dir, people, cmd] {
    if (!*people) {
      for (const char* flag : {"--train-raters", "--ratings-per-person", "--people-images", "--noise"})
        if (cmd->count(flag) > 0) throw CLI::ValidationError(flag, "only applies with --people");
      const std::string csv = data::make_synthetic_dataset(*dir, *c);
      AE_INFO("wrote " << c->count << " images and " << csv);
      return;
    }
    // Shared options override the people defaults only when given.
    if (cmd->count("--count") > 0) p->count = c->count;
    if (cmd->count("--width") > 0) p->width = c->width;
    if (cmd->count("--height") > 0) p->height = c->height;
    p->seed = c->seed;
    const data::PeopleDataset d = data::make_people_dataset(*dir, *p);
    AE_INFO("wrote " << p->count << " images rated by " << p->train_raters << " anonymous raters and "
                     << d.people.size() << " test persons");
    std::printf("%s\n%s\n%s\n", d.images_dir.c_str(), d.train_csv.c_str(), d.workers_csv.c_str());
  });
}

}  // namespace ae::app
