// aesthete make-dataset: a generated photo set with a known score function (tests, demo).
#include <memory>

#include "apps/commands.h"
#include "runtime/log.h"
#include "train/synthetic.h"

namespace ae::app {

void add_make_dataset_command(CLI::App& app) {
  auto c = std::make_shared<data::SyntheticConfig>();
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "make-dataset", "Write a generated data set (PNG + labels.csv) whose score is a known function of brightness");
  cmd->add_option("--out", *dir, "Folder to write")->required();
  cmd->add_option("--count", c->count)->capture_default_str();
  cmd->add_option("--width", c->width)->capture_default_str();
  cmd->add_option("--height", c->height)->capture_default_str();
  cmd->add_option("--seed", c->seed)->capture_default_str();
  cmd->callback([c, dir] {
    const std::string csv = data::make_synthetic_dataset(*dir, *c);
    AE_INFO("wrote " << c->count << " images and " << csv);
  });
}

}  // namespace ae::app
