#pragma once
// Generic training (`aesthete train`): the original system's recipe (Adam, lr 1e-3 x0.9 every 2
// epochs, 10 epochs, batch 64, MSE on z-scores) with its flaws fixed: the model is selected on
// a validation split of the *training* images (or a given file), never on test users' images.
//
// Files in out_dir (every write atomic):
//   model.safetensors  best epoch by validation MSE (an ordinary model checkpoint)
//   last.safetensors   full training state for --resume: weights, BN statistics, optimiser
//                      moments, epoch and batch position, dropout stream position, running sums
//   metrics.csv        one row per finished epoch
//   report.html        written by the caller from on_epoch_end (train/report_html.h), as the CLI and
//                      the Python module do
// Under mpirun (runtime/dist.h) the run is data parallel: every rank trains its shard of each
// global batch (TrainStep), validates on the whole validation set, and rank 0 alone writes the
// files above; every rank resumes from them.
// A stop request (options.stop, set by Ctrl-C) finishes the current step, saves last.safetensors and returns
// `interrupted`; a resumed run then produces exactly the losses of an uninterrupted one on the
// same device.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "runtime/stop.h"
#include "train/optimizer.h"
#include "train/transforms.h"

namespace ae::train {

struct TrainOptions {
  std::string train_csv;
  std::string images_dir;
  std::string out_dir;
  std::string val_csv;        // empty: split val_fraction of the training rows
  double val_fraction = 0.1;
  model::HeadType head = model::HeadType::seed;
  int epochs = 10;
  int64_t batch = 64;
  float lr = 1e-3f;
  float lr_decay = 0.9f;
  int decay_every = 2;
  float weight_decay = 0.0f;
  OptimizerKind optimizer = OptimizerKind::adam;
  float dropout = 0.5f;
  int size = 224;
  int resize_to = 256;
  data::ResizeMode resize_mode = data::ResizeMode::squash;
  Device device = Device::cpu();
  int workers = 2;
  uint64_t seed = 0;
  bool resume = false;
  double max_missing_fraction = 0.1;  // stop when more of the listed images are absent
  // Under mpirun with several ranks (data parallel, train/train_loop.h TrainStep): BatchNorm
  // statistics of the global batch (true), or of each rank's shard (false).
  bool sync_bn = true;
  // CUDA devices: replay one captured training step per batch shape (TrainStep::set_graphs). The
  // steps' bits are the same either way, so a run may resume with the other setting.
  bool cuda_graphs = true;
  int64_t stop_after_steps = -1;      // testing: behave as if Ctrl-C arrived after N steps
  const StopFlag* stop = nullptr;     // checked after every step (runtime/stop.h); nullptr: never
};

struct EpochRow {
  int64_t epoch = 0;  // 1-based
  double lr = 0;
  double train_loss = 0;
  double val_mse = 0, val_spearman = 0, val_pearson = 0;
  double images_per_s = 0;
  double seconds = 0;
  int64_t skipped = 0;  // unreadable images this epoch
};

struct TrainResult {
  bool interrupted = false;
  bool diverged = false;        // NaN/Inf loss: stopped, last good checkpoint kept
  std::vector<EpochRow> epochs; // all finished epochs, including those before a resume
  int64_t best_epoch = 0;
  double best_val_mse = 0;
};

// `init`: starting weights (ImageNet backbone or an earlier aesthete model), already read by the
// caller; absent = random initialisation. on_epoch_end is called after each epoch's files are
// written (the front ends write report.html from it: train/report_html.h).
TrainResult run_training(const TrainOptions& options, const std::optional<model::Checkpoint>& init,
                         const std::function<void(const TrainResult&)>& on_epoch_end = {});

// metrics.csv text for a list of epochs (header included).
std::string metrics_csv(const std::vector<EpochRow>& rows);

}  // namespace ae::train
