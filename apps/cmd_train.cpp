// aesthete train: generic training on a labelled photo folder (train/trainer.h does the work).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "apps/commands.h"
#include "runtime/atomic_file.h"
#include "runtime/dist.h"
#include "runtime/log.h"
#include "session/session.h"
#include "train/report_html.h"
#include "train/trainer.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace {

struct TrainArgs {
  train::TrainOptions o;
  std::string init, head = "seed", device = "auto", optimizer = "adam", resize_mode = "squash";
};

void run_train(TrainArgs& a) {
  train::TrainOptions& o = a.o;
  o.head = model::parse_head(a.head);
  AE_CHECK(o.head != model::HeadType::imagenet, "--head must be seed or linear");
  o.device = resolve_device(a.device);
  dist::announce(o.device.str());  // under mpirun: data parallel, rank 0 writes the files
  o.optimizer = train::parse_optimizer(a.optimizer);
  o.resize_mode = data::parse_resize_mode(a.resize_mode);
  std::optional<model::Checkpoint> init;
  if (!a.init.empty() && !o.resume) init = weights::load_model_file(a.init);

  const auto settings = train::training_settings(o, a.init, a.head, a.optimizer, a.resize_mode);
  const std::string report = (std::filesystem::path(o.out_dir) / "report.html").string();
  auto write_report = [&](const train::TrainResult& r) {
    if (dist::is_root()) train::write_training_report(r, settings, o.out_dir);
  };

  train::TrainResult r;
  {
    const session::InterruptHandler interrupt;  // Ctrl-C: finish the step, save, return
    o.stop = interrupt.flag();
    r = train::run_training(o, init, write_report);
  }

  if (r.interrupted) {
    write_report(r);
    AE_INFO("stopped; the state is saved in " << o.out_dir << "/last.safetensors. Continue with:\n  "
                                              << resume_command_line());
    return;
  }
  if (r.diverged) {
    set_exit_code(1);
    return;
  }
  AE_INFO("done: best epoch " << r.best_epoch << " (val MSE " << r.best_val_mse << ") saved as " << o.out_dir
                              << "/model.safetensors; report " << report);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  train::TrainOptions& o = a->o;
  CLI::App* cmd = app.add_subcommand("train", "Train a generic aesthetics model (the original recipe, fixed model selection)");
  cmd->add_option("--train-csv", o.train_csv, "Labels: FLICKR-AES file or CSV image,score[,user]")->required();
  cmd->add_option("--images", o.images_dir, "Folder holding the images")->required();
  cmd->add_option("--out", o.out_dir, "Output folder (model.safetensors, last.safetensors, metrics.csv, report.html)")
      ->required();
  cmd->add_option("--val-csv", o.val_csv, "Validation labels (default: a split of the training images)");
  cmd->add_option("--val-fraction", o.val_fraction, "Fraction of training images held out for model selection")
      ->capture_default_str();
  cmd->add_option("--init", a->init, "Starting weights: ImageNet resnet18 (.pth/.safetensors) or an aesthete model");
  cmd->add_option("--head", a->head, "seed (the original MLP on the 1000 logits) or linear (512->1)")
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs)->capture_default_str();
  cmd->add_option("--batch", o.batch)->capture_default_str();
  cmd->add_option("--lr", o.lr)->capture_default_str();
  cmd->add_option("--lr-decay", o.lr_decay, "lr = lr * decay^floor(epoch / decay-every)")->capture_default_str();
  cmd->add_option("--decay-every", o.decay_every)->capture_default_str();
  cmd->add_option("--optimizer", a->optimizer, "adam, adamw or sgd")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay)->capture_default_str();
  cmd->add_option("--dropout", o.dropout, "Dropout of the seed head")->capture_default_str();
  cmd->add_option("--size", o.size, "Network input side")->capture_default_str();
  cmd->add_option("--resize-to", o.resize_to, "Train-time resize before the random crop")->capture_default_str();
  cmd->add_option("--resize-mode", a->resize_mode, "squash (original) or aspect")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--workers", o.workers, "Image decoding threads")->capture_default_str();
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_option("--max-missing", o.max_missing_fraction, "Stop if a larger fraction of listed images is missing")
      ->capture_default_str();
  cmd->add_flag("--sync-bn,!--no-sync-bn", o.sync_bn,
                "Under mpirun: BatchNorm statistics of the global batch (default), or of each rank's shard");
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", o.cuda_graphs,
                "On a CUDA device, replay one captured training step and evaluation forward per batch shape "
                "(default; same results)");
  cmd->add_flag("--resume", o.resume, "Continue the run saved in --out");
  cmd->add_option("--stop-after-steps", o.stop_after_steps, "Stop as if interrupted after N steps (testing)")
      ->group("");
  add_max_pixels_option(*cmd);
  cmd->callback([a] { run_train(*a); });
}

}  // namespace ae::app
