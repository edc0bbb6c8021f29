#pragma once
// Personalisation (`aesthete personalise`): the k-shot per-user protocol of the original system
// (shared/reference/seed-system.md §3-§5) on one shared backbone, with its flaws fixed.
//
// For each user and repeat r: draw k of the user's ratings for training (a seeded permutation keyed
// by (seed, user, r), so any run can be redone alone), the rest are that user's test images. Train
// one of three modes starting from the generic model exactly (adapters zero, every BatchNorm
// parameter and statistic and the whole head copied), for a fixed number of epochs (`fixed`) or
// for the epoch with the lowest MSE on a validation part of the k images (`val`) — never chosen
// on the test images. Measure Spearman rho and MSE of the generic and the personalised model on
// the test images.
//
// The original's optimistic number (best epoch chosen on the test images, max_e rho_e - rho_0) is
// reported too, in columns named oracle_*, so results compare with the paper's without being
// mistaken for ours. It needs the test images evaluated after every epoch; those evaluations feed
// the curves and the oracle columns only, never the training or the selection.
//
// Modes (trainable parameters; everything else frozen, and frozen convolutions compute no weight
// gradient):
//   head      the seed head (323k). The backbone, BatchNorm included, stays the generic one: its
//             BatchNorm layers run on their running statistics, which are not updated (the
//             original let a user's 10 images overwrite them in train mode).
//   full      every parameter of the generic network (11.9M); adapters stay zero.
//   adapters  residual adapters + every backbone BatchNorm's gamma/beta (Adam, weight decay 0.01)
//             and the head (Adam, no weight decay); BatchNorm in train mode, as the original.
//             The original also trained the ImageNet fc's bias; it is frozen here so that a user
//             file holds adapters, BatchNorms and head only.
//
// Files in out_dir, every write atomic:
//   results.csv    one row per (user, repeat), no timings: a rerun, a resumed run and a run split
//                  across processes give the same bytes
//   draws.csv      which images each (user, repeat) trained, validated and was tested on
//   summary.json   means and spreads, parameters trained, user-file size, seconds per user
//   report.html    rendered by the caller from PersonaliseResult (train/report_html.h)
//   users/<user>.safetensors  with fit_all: the user trained on all of their ratings (a user file
//                  for head and adapters; a whole model file for full)
//   state.safetensors  progress for --resume: finished runs, and the current run's checkpoint
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/shared_model.h"
#include "runtime/stop.h"
#include "train/loader.h"
#include "train/optimizer.h"

namespace ae::train {

enum class PersonaliseMode { head, full, adapters };
const char* mode_name(PersonaliseMode m);
PersonaliseMode parse_mode(const std::string& text);

enum class EpochSelect { fixed, val };
const char* select_name(EpochSelect s);
EpochSelect parse_select(const std::string& text);

struct PersonaliseOptions {
  std::string model_path;   // the generic model, for the fingerprint and messages
  std::string ratings_csv;  // FLICKR-AES per-worker file or CSV image,score,user
  std::string images_dir;
  std::string out_dir;
  int k = 0;
  PersonaliseMode mode = PersonaliseMode::adapters;
  // 0 / negative = the original's default for the mode and k (defaults_for()).
  int repeats = 0;
  int epochs = 0;
  float lr = 0;
  int decay_every = 0;
  float weight_decay = -1;   // adapters and BatchNorm (adapters mode), or every parameter (head, full)
  float lr_decay = 0.9f;
  EpochSelect select = EpochSelect::fixed;
  double val_fraction = 0.2;  // --select val: part of the k images held out (at least 2)
  int64_t batch = 30;
  std::vector<std::string> users;  // empty = every user in the ratings file, in file order
  int only_repeat = -1;            // >= 0: run this repeat alone (same result as within a full run)
  int size = 224;
  int resize_to = 0;               // 0 = size * 256 / 224 (the original's 256 -> 224 crop)
  Device device = Device::cpu();
  int workers = 2;
  uint64_t seed = 0;
  bool fit_all = false;
  bool resume = false;
  // CUDA devices: replay one captured training step per batch shape (TrainStep::set_graphs). The
  // steps' bits are the same either way, so a run may resume with the other setting.
  bool cuda_graphs = true;
  double checkpoint_seconds = 30;  // the current run's state is saved at an epoch end this often
  int64_t stop_after_steps = -1;   // testing: behave as if Ctrl-C arrived after N steps
  const StopFlag* stop = nullptr;  // checked after every step (runtime/stop.h); nullptr: never
};

// The original's hyper-parameters (seed-system.md §3): k < 50 counts as the k=10 protocol,
// k >= 50 as the k=100 one.
//   head:     k=10: 20 epochs, lr 1e-3 x0.9 every 5 epochs, 10 repeats; k=100: 20, 1e-4 every 2, 3
//   full:     20 epochs, lr 1e-4 x0.9 every 2 epochs; repeats 10 (k=10) / 3 (k=100)
//   adapters: 100 epochs, lr 1e-3 x0.9 every 5 epochs, weight decay 0.01 (not on the head);
//             repeats 10 / 3
// Fills every field left at 0 / negative.
void apply_defaults(PersonaliseOptions& o);

// Freezes and unfreezes the groups of `mode` and sets the BatchNorm policy (see the file
// comment). The model must be a SharedModel's network with a state of the mode's scope bound.
void configure_mode(model::ResNet18& net, PersonaliseMode mode);
model::StateScope scope_of(PersonaliseMode mode);
// The optimisers of `mode` over `net`'s trainable parameters (one, or two for adapters).
std::vector<std::unique_ptr<Optimizer>> make_optimizers(model::ResNet18& net, PersonaliseMode mode, float lr,
                                                        float weight_decay);

struct RunRow {
  std::string user;
  int repeat = 0;        // -1 for the fit on all ratings (not a row of results.csv)
  int64_t n_train = 0, n_val = 0, n_test = 0;
  double rho_generic = 0, rho_personal = 0, mse_generic = 0, mse_personal = 0;
  int64_t epochs = 0;    // epochs of training in the personalised model (the selected epoch for val)
  // Oracle (the original's optimistic selection on the test images): best epoch 0..E by test rho.
  int64_t oracle_epoch = 0;
  double oracle_rho = 0, oracle_mse = 0;
  // Per epoch 0..E (0 = before training): test rho and MSE, train loss (epoch 0: NaN), val MSE
  // (select val only, else empty).
  std::vector<double> test_rho, test_mse, train_loss, val_mse;
  double seconds = 0;    // measured, for summary.json only
  int64_t unreadable = 0;
};

struct PersonaliseResult {
  std::vector<RunRow> rows;  // finished runs in order (fits included, repeat -1)
  std::vector<std::string> users;
  bool interrupted = false;
  int64_t trainable_parameters = 0;
  int64_t user_state_bytes = 0;             // tensor bytes of one user's state
  std::map<std::string, int64_t> user_file_bytes;  // fit_all: bytes of each written file
  PersonaliseOptions options;               // with defaults applied
};

struct PersonaliseHooks {
  std::function<void(const PersonaliseResult&)> on_run_end;  // after each finished run's files
};

// Runs the protocol (or resumes it). All users in this process on `shared`'s backbone.
PersonaliseResult run_personalisation(PersonaliseOptions options, model::SharedModel& shared,
                                      const PersonaliseHooks& hooks = {});

std::string results_csv(const std::vector<RunRow>& rows, PersonaliseMode mode, int k);
std::string summary_json(const PersonaliseResult& r);

// ---- one person from a list of rated photos (the Python module's personalise) ----
// One run of the protocol above for one person, without its files: `ratings` are that person's
// photos (paths) and ratings (z). With o.k == 0 every rating trains: the protocol's fit on all
// ratings (--fit-all), so with the same settings and user id the state equals the one in
// users/<user_id>.safetensors bit for bit on the CPU. With o.k >= 2, k of them drawn exactly as
// the protocol's repeat 0 train and the rest test: the row equals repeat 0's row of results.csv
// (rho and MSE of the generic and the personalised model on the held-out ratings). With o.select
// val, a validation part of the training ratings chooses the epoch, and the state returned is the
// one of that epoch. Used fields of `o`: k, mode, epochs, lr, lr_decay, decay_every, weight_decay,
// select, val_fraction, batch, size, resize_to, device, workers, seed, stop; defaults as
// apply_defaults (for k = 0, the k < 50 defaults). A missing photo is an ae::Error of kind file
// naming it; an unreadable one is skipped and counted (row.unreadable counts the test images).
// Progress goes to the log.
struct FitResult {
  std::shared_ptr<model::UserState> state;  // the person's trained state (scope_of(mode)); null when interrupted
  RunRow row;                               // repeat 0, or -1 for k == 0
  bool interrupted = false;                 // o.stop was set: the run ended after a step, nothing returned
};
FitResult fit_user(model::SharedModel& shared, const std::string& user_id, const std::vector<data::Sample>& ratings,
                   PersonaliseOptions o);

}  // namespace ae::train
