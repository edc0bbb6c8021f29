// aesthete personalise: the k-shot per-user protocol on one shared backbone (train/personalise.h).
#include <filesystem>
#include <memory>
#include <sstream>

#include "apps/commands.h"
#include "runtime/atomic_file.h"
#include "runtime/dist.h"
#include "runtime/log.h"
#include "session/session.h"
#include "train/labels.h"
#include "train/personalise.h"
#include "train/report_html.h"
#include "train/trainer.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct PersonaliseArgs {
  train::PersonaliseOptions o;
  std::string mode = "adapters", select = "fixed", device = "auto", users;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

void run_personalise(PersonaliseArgs& a) {
  train::PersonaliseOptions& o = a.o;
  o.mode = train::parse_mode(a.mode);
  o.select = train::parse_select(a.select);
  o.users = split_list(a.users);
  AE_CHECK(o.k >= 1, "--k is required: the number of each user's ratings to train on (e.g. 10 or 100)");
  // A bad ratings file is refused before the model is read and moved to the device (seconds); the
  // protocol parses it again, which takes milliseconds.
  (void)data::read_labels(o.ratings_csv);
  o.device = resolve_device(a.device);
  dist::announce(o.device.str());  // under mpirun: users are dealt to ranks, rank 0 writes the files
  const model::Checkpoint ck = weights::load_model_file(o.model_path);
  model::SharedModel shared(ck, o.device, "--model '" + o.model_path + "'");
  AE_INFO("generic model " << o.model_path << " (" << shared.digest() << ") on " << o.device.str());

  const std::string command = shell_command_line();
  const std::string report = (fs::path(o.out_dir) / "report.html").string();
  train::PersonaliseHooks hooks;
  hooks.on_run_end = [&](const train::PersonaliseResult& r) {
    const std::string html = train::personalisation_report_html(r, command);
    atomic_write(report, html.data(), html.size());
  };
  train::PersonaliseResult r;
  {
    const session::InterruptHandler interrupt;  // Ctrl-C: finish the step, save, return
    o.stop = interrupt.flag();
    r = train::run_personalisation(o, shared, hooks);
  }
  if (dist::is_root()) hooks.on_run_end(r);
  if (r.interrupted) {
    AE_INFO("stopped; progress is saved in " << o.out_dir << "/state.safetensors. Continue with:\n  "
                                             << resume_command_line());
    return;
  }
  double sum_g = 0, sum_p = 0;
  int n = 0;
  for (const auto& row : r.rows)
    if (row.repeat >= 0 && row.rho_generic == row.rho_generic && row.rho_personal == row.rho_personal)
      sum_g += row.rho_generic, sum_p += row.rho_personal, ++n;
  if (n > 0)
    AE_INFO("mean Spearman over " << n << " runs: generic " << sum_g / n << ", personalised " << sum_p / n
                                  << " (delta " << (sum_p - sum_g) / n << ")");
  AE_INFO("results: " << o.out_dir << "/results.csv, summary.json, report " << report);
}

}  // namespace

void add_personalise_command(CLI::App& app) {
  auto a = std::make_shared<PersonaliseArgs>();
  train::PersonaliseOptions& o = a->o;
  CLI::App* cmd = app.add_subcommand(
      "personalise", "Learn each person's taste from k of their ratings (the k-shot protocol, honest selection)");
  cmd->alias("personalize");
  cmd->add_option("--model", o.model_path, "The generic model (from aesthete train, or a .pth state dict)")->required();
  cmd->add_option("--ratings", o.ratings_csv,
                  "Per-user ratings: FLICKR-AES test_workers_dataset_normalized.csv as published, or CSV image,score,user")
      ->required();
  cmd->add_option("--images", o.images_dir, "Folder holding the images")->required();
  cmd->add_option("--out", o.out_dir, "Output folder (results.csv, draws.csv, summary.json, report.html, users/)")
      ->required();
  cmd->add_option("--k", o.k, "Ratings drawn per user for training (the original: 10 or 100)")->required();
  cmd->add_option("--mode", a->mode, "adapters (residual adapters + BatchNorm + head), head, or full")
      ->capture_default_str();
  cmd->add_option("--repeats", o.repeats, "Draws per user (default: 10 for k < 50, else 3)");
  cmd->add_option("--epochs", o.epochs, "Training epochs (default: 100 adapters, 20 head/full)");
  cmd->add_option("--select", a->select,
                  "fixed: the last epoch; val: the epoch with the lowest MSE on a validation part of the k images")
      ->capture_default_str();
  cmd->add_option("--val-fraction", o.val_fraction, "With --select val: part of the k images held out (at least 2)")
      ->capture_default_str();
  cmd->add_option("--batch", o.batch)->capture_default_str();
  cmd->add_option("--lr", o.lr, "Learning rate (default: the original's for the mode and k)");
  cmd->add_option("--lr-decay", o.lr_decay, "lr * decay^floor(epoch / decay-every)")->capture_default_str();
  cmd->add_option("--decay-every", o.decay_every, "Epochs per lr decay (default: the original's)");
  cmd->add_option("--weight-decay", o.weight_decay,
                  "Adam weight decay (default 0.01 on adapters and BatchNorm in adapters mode, never on the head; 0 "
                  "otherwise)");
  cmd->add_option("--users", a->users, "Comma-separated user ids (default: every user in the ratings file)");
  cmd->add_option("--only-repeat", o.only_repeat, "Run this repeat (0-based) alone; gives the same row as a full run");
  cmd->add_option("--size", o.size, "Network input side")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--workers", o.workers, "Image decoding threads")->capture_default_str();
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_flag("--fit-all", o.fit_all,
                "Also train each user on all of their ratings and write users/<user>.safetensors for score --user");
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", o.cuda_graphs,
                "On a CUDA device, replay one captured training step and evaluation forward per batch shape "
                "(default; same results)");
  cmd->add_flag("--resume", o.resume, "Continue the run saved in --out");
  cmd->add_option("--checkpoint-every", o.checkpoint_seconds,
                  "Seconds between checkpoints of the running user (at epoch ends; 0 = every epoch)")
      ->capture_default_str();
  cmd->add_option("--stop-after-steps", o.stop_after_steps, "Stop as if interrupted after N steps (testing)")->group("");
  add_max_pixels_option(*cmd);
  cmd->callback([a] { run_personalise(*a); });
}

}  // namespace ae::app
