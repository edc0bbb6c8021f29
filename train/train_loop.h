#pragma once
// The one training loop (DESIGN.md "Data, training, personalisation"): the optimisation step, the
// epoch over a loader with its running sums and stop checks, evaluation over a loader, and the
// training-state file that makes a run resumable. Generic training (train/trainer.cpp),
// personalisation (train/personalise.cpp) and `aesthete bench` are built from these pieces.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <memory>

#include "model/checkpoint.h"
#include "model/model_graph.h"
#include "train/loader.h"
#include "train/optimizer.h"

namespace ae::train {

class TrainGraph;

// One optimisation step: training-mode forward, MSE against the targets, a finiteness check of
// the loss, backward, every optimiser's step. Several optimisers serve parameter groups with
// different settings (personalisation decays adapters and BatchNorm but not the head).
class TrainStep {
 public:
  TrainStep(model::ResNet18& net, std::vector<Optimizer*> optimizers, Device device);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  struct Outcome {
    float loss = 0;       // mean over the batch
    bool finite = true;   // false: no backward and no update were made
  };
  // `images` [B,H,W,3] and `targets` [B,1] on any device (moved to the step's device).
  // Under data parallel: this rank's shard, after global_rows(); the loss is the global batch's.
  Outcome run(const Tensor& images, const Tensor& targets);

  // Data-parallel training (DESIGN.md "Beyond one process"; no effect in a single process): the
  // ranks of runtime/dist.h each run a shard of every global batch through the same model. Each
  // rank's loss gradient is scaled by its rows / the global rows, so the sum of the ranks'
  // gradients is the gradient of the global batch's mean loss; that sum is formed by one
  // all-reduce of one flat buffer per step, and every rank then makes the same optimiser step.
  // sync_bn: training-mode BatchNorm normalises with the global batch's statistics
  // (kernels/batchnorm_sync.h), so N ranks compute what one process computes on the global
  // batch; without it each rank normalises with its shard's own (PyTorch DDP's default).
  void set_data_parallel(bool sync_bn);
  bool data_parallel() const { return parallel_; }
  // The rows of the step's global batch, given this rank's; it also places this rank's rows in
  // the global batch (dropout masks). Every rank calls it once per batch, also for a batch that
  // is then skipped. `local_rows` alone in a single process.
  int64_t global_rows(int64_t local_rows);
  // True on every rank when `mine` is true on any (a stop request seen by one rank stops all).
  bool any_rank(bool mine) const;

  // CUDA graphs (train/train_graph.h; on unless turned off): on a CUDA device, outside data
  // parallel, the steps of one batch shape replay one captured step, with the eager steps' bits.
  // The first batch of each shape runs eagerly (a warm-up before any capture, as PyTorch advises:
  // lazily made state and kernel attributes exist before it); the first shape to come a second
  // time is captured then and replayed from then on; batches of other shapes (an epoch's short
  // tail) run eagerly, so they neither cost the full batches their graph nor a graph's memory of
  // their own. A capture that fails is reported once (a warning) and the step runs eagerly, without
  // graphs from then on. No effect on the CPU.
  void set_graphs(bool on) { graphs_ = on; }
  bool graphs() const { return graphs_; }
  int graph_captures() const;   // captures made (tests, bench)
  int64_t graph_replays() const;  // steps run as replays

 private:
  Outcome run_eager(const Tensor& images, const Tensor& targets);
  bool graph_can_run(const Tensor& images, const Tensor& targets) const;
  void allreduce_gradients();

  model::ResNet18& net_;
  std::vector<Optimizer*> optimizers_;
  Device device_;
  bool parallel_ = false, sync_bn_ = false;
  bool said_host_fallback_ = false;  // the device-gradients-through-the-host message was logged
  int64_t local_rows_ = 0, global_rows_ = 0;
  int64_t steps_ = 0;  // steps run by this object, for messages
  bool graphs_ = true;
  std::unique_ptr<TrainGraph> graph_;
  model::GraphShapeChoice shapes_;
};

void set_lr(const std::vector<Optimizer*>& optimizers, float lr);

// Where a run stands within an epoch, with the epoch's running sums; saved in training states so
// that a run resumes mid-epoch and reports the same epoch loss as an uninterrupted one.
struct Position {
  int64_t epoch = 0;  // 0-based epoch to run next
  int64_t batch = 0;  // next batch within it
  double loss_sum = 0;
  int64_t loss_count = 0;
  int64_t skipped = 0;
  double train_seconds = 0;

  double mean_loss() const { return loss_count > 0 ? loss_sum / static_cast<double>(loss_count) : 0.0; }
  void to_metadata(std::map<std::string, std::string>& meta) const;
  static Position from_metadata(const std::map<std::string, std::string>& meta, const std::string& path);
};

struct EpochHooks {
  // Asked after every step; true ends the epoch early (Ctrl-C, --stop-after-steps).
  std::function<bool()> should_stop;
  // After every batch, with the seconds spent in this epoch in this process.
  std::function<void(const Position&, double seconds)> after_batch;
};

struct EpochOutcome {
  enum class End { finished, stopped, diverged } end = End::finished;
  float bad_loss = 0;        // the non-finite loss, when diverged
  int64_t bad_batch = 0;     // 0-based batch where it happened
  double seconds = 0;        // spent in this call (also added to pos.train_seconds)
  int64_t images = 0;        // trained in this call
};

// Runs `epoch` of `loader` from pos.batch on, updating `pos` (a 1-image batch is skipped: BatchNorm
// needs two samples). On `stopped` and `diverged`, `pos` points at the next batch to run.
EpochOutcome run_epoch(data::Loader& loader, int64_t epoch, Position& pos, TrainStep& step, const EpochHooks& hooks = {});

// Eval-mode, no-grad predictions over every readable image of `loader` (which should not
// shuffle), restoring the model's training and grad flags afterwards.
struct Predictions {
  std::vector<double> pred, truth;
  std::vector<int64_t> samples;  // loader sample index of each prediction
  int64_t skipped = 0;           // unreadable images
};
// One loader's predictions with a Predictor of its own (no graph outlives the call).
Predictions predict(model::ResNet18& net, data::Loader& loader, Device device);

// Predictions of one model over loaders, again and again (validation after every epoch). On a CUDA
// device, unless turned off, the batches of one shape are replays of one captured forward
// (model::GraphedFunction: chosen as TrainStep chooses its graph, GraphShapeChoice), with the eager
// forward's bits. The graph lives as long as the Predictor, so later calls replay it: weights
// trained in place in between need no new capture (ModelGraph re-captures when it must). A
// capture that fails is logged once (a warning) and the forwards run eagerly from then on.
class Predictor {
 public:
  Predictor(model::ResNet18& net, Device device, bool graphs = true);
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  Predictions run(data::Loader& loader);
  // The output of each row of one batch `images` ([N,H,W,3], any device) in eval mode without
  // gradients (flags set for it and left so): the batches of `aesthete score` and Python's Model.score.
  std::vector<float> scores(const Tensor& images);
  int graph_captures() const;
  int64_t graph_replays() const;

 private:
  Tensor forward(const Tensor& images);

  model::ResNet18& net_;
  model::GraphedFunction forward_;
  Device device_;
};

// Training-state files: a safetensors file (kind "training-state") of tensors plus string
// metadata. `fingerprint` holds the settings a resumed run must share with the original one; a
// difference is an error listing every changed setting. `what` names the run in messages.
void write_training_state(const std::string& path, model::NamedTensors tensors,
                          const std::vector<Optimizer*>& optimizers, std::map<std::string, std::string> metadata);
struct TrainingState {
  model::NamedTensors model;      // everything that is not optimiser state
  model::NamedTensors optimizer;  // "optim.*"
  std::map<std::string, std::string> metadata;
};
TrainingState read_training_state(const std::string& path, const std::map<std::string, std::string>& fingerprint,
                                  const std::string& what);
// Restores the optimisers from the state's "optim.*" tensors and its optimizer_steps entry.
void load_optimizers(const TrainingState& state, const std::vector<Optimizer*>& optimizers, const std::string& path);

// Metadata helpers: a number written with full precision, and read back with a message naming
// the file and key when absent or malformed.
std::string format_exact(double v);
double metadata_number(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path);

}  // namespace ae::train
