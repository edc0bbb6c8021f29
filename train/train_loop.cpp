#include "train/train_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <vector>

#include "kernels/batchnorm_sync.h"
#include "kernels/ops.h"
#include "model/safetensors.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "train/train_graph.h"

namespace ae::train {

namespace fs = std::filesystem;

std::string format_exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

double metadata_number(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  const auto it = meta.find(key);
  AE_CHECK(it != meta.end(), "'" << path << "' is not a complete training state: no '" << key << "' entry");
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  AE_CHECK(end != it->second.c_str() && *end == '\0',
           "'" << path << "': entry '" << key << "' = '" << it->second << "' is not a number");
  return v;
}

// ---------------------------------------------------------------- step

TrainStep::TrainStep(model::ResNet18& net, std::vector<Optimizer*> optimizers, Device device)
    : net_(net), optimizers_(std::move(optimizers)), device_(device) {}

TrainStep::~TrainStep() = default;

int TrainStep::graph_captures() const { return graph_ ? graph_->captures() : 0; }
int64_t TrainStep::graph_replays() const { return graph_ ? graph_->replays() : 0; }

bool TrainStep::graph_can_run(const Tensor& images, const Tensor& targets) const {
  return graphs_ && device_.is_cuda() && net_.device() == device_ && !parallel_ && net_.training() &&
         net_.grad_enabled() && images.shape().size() == 4 && images.dim(0) >= 2 &&
         targets.shape() == Shape({images.dim(0), 1}) &&  // what TrainGraph refuses or cannot do
         shapes_.wants_graph(images.shape());
}

TrainStep::Outcome TrainStep::run(const Tensor& images, const Tensor& targets) {
  if (graph_can_run(images, targets)) {
    if (!graph_) graph_ = std::make_unique<TrainGraph>(net_, optimizers_, device_);
    const int captures_before = graph_->captures();
    try {
      const Outcome out = graph_->run(images, targets);
      shapes_.graph_ran(images.shape());
      if (out.finite) ++steps_;
      return out;
    } catch (const Error& e) {
      // A replay that fails is a device error, not a graph limitation.
      if (graph_->captures() == captures_before) throw;
      // Nothing of the captured step ran (a capture queues nothing), and TrainGraph undid its host
      // counting: the same step runs eagerly below.
      AE_WARN("the training step could not be captured as a CUDA graph (" << e.what()
                                                                          << "); training goes on without graphs");
      graphs_ = false;
      graph_.reset();
      shapes_.forget_graph();
    }
  }
  shapes_.ran_eagerly(images.shape());
  return run_eager(images, targets);
}

TrainStep::Outcome TrainStep::run_eager(const Tensor& images, const Tensor& targets) {
  net_.zero_grad();
  Outcome out;
  if (parallel_) {
    AE_CHECK(images.dim(0) == local_rows_, "data-parallel step: global_rows() was told " << local_rows_
                                            << " rows but the batch has " << images.dim(0));
    AE_CHECK(local_rows_ >= 1, "data-parallel training: rank " << dist::rank() << " of " << dist::size()
                                << " got no rows of a " << global_rows_ << "-row batch; use a --batch of at least "
                                << 2 * dist::size() << " and a data set with no tail batch smaller than the ranks");
  }
  // Under --sync-bn every training-mode BatchNorm of this forward and backward sums its
  // statistics over the ranks.
  std::optional<ops::ScopedBatchNormSync> sync;
  if (parallel_ && sync_bn_)
    sync.emplace([](double* sums, int64_t n) { dist::allreduce_sum(sums, n, "BatchNorm statistics all-reduce"); });
  const Tensor y = net_.forward(images.to(device_));
  const Tensor target = targets.to(device_);
  out.loss = ops::mse_loss_forward(y, target).item();  // item() waits for the device
  if (parallel_) {  // the global batch's mean loss, so that every rank takes the same decision below
    double sum = static_cast<double>(out.loss) * static_cast<double>(local_rows_);
    dist::allreduce_sum(&sum, 1, "loss all-reduce (step " + std::to_string(steps_ + 1) + ")");
    out.loss = static_cast<float>(sum / static_cast<double>(global_rows_));
  }
  out.finite = std::isfinite(out.loss);
  if (!out.finite) return out;  // the caller stops; the next forward replaces what this one kept
  Tensor dy = ops::mse_loss_backward(y, target);
  // d(global mean loss)/dy of this rank's rows: the local mean's gradient times rows / global rows.
  if (parallel_)
    dy = ops::scale(dy, static_cast<float>(static_cast<double>(local_rows_) / static_cast<double>(global_rows_)));
  net_.backward(dy);
  if (parallel_) allreduce_gradients();
  for (Optimizer* o : optimizers_) o->step();
  ++steps_;
  return out;
}

void TrainStep::set_data_parallel(bool sync_bn) {
  parallel_ = dist::size() > 1;
  sync_bn_ = sync_bn;
}

int64_t TrainStep::global_rows(int64_t local_rows) {
  local_rows_ = global_rows_ = local_rows;
  if (!parallel_) return local_rows;
  // Every rank's row count in its own slot: the sum gives the total and where this rank's rows begin.
  std::vector<double> rows(static_cast<std::size_t>(dist::size()), 0.0);
  rows[static_cast<std::size_t>(dist::rank())] = static_cast<double>(local_rows);
  dist::allreduce_sum(rows.data(), static_cast<int64_t>(rows.size()),
                      "batch size all-reduce (step " + std::to_string(steps_ + 1) + ")");
  int64_t first = 0;
  global_rows_ = 0;
  for (int r = 0; r < dist::size(); ++r) {
    if (r < dist::rank()) first += static_cast<int64_t>(rows[static_cast<std::size_t>(r)]);
    global_rows_ += static_cast<int64_t>(rows[static_cast<std::size_t>(r)]);
  }
  net_.set_dropout_first_row(first);
  return global_rows_;
}

bool TrainStep::any_rank(bool mine) const {
  if (!parallel_) return mine;
  double flag = mine ? 1.0 : 0.0;
  dist::allreduce_sum(&flag, 1, "stop-request all-reduce");
  return flag > 0;
}

// Every trainable parameter's gradient summed over the ranks in one collective on one flat buffer.
// On a device with a registered device all-reduce (NCCL on CUDA GPUs, runtime/dist.h) the buffer
// lives on the device and the sum runs there, on its own stream, and the defined gradients are
// overwritten in place. Elsewhere (the CPU; the emulated device or a CUDA build without NCCL) the
// buffer is host memory and the sum is MPI's. An undefined gradient stays undefined (the host path
// counts it as zeros): the ranks run the same model, so they agree on which are defined.
void TrainStep::allreduce_gradients() {
  const std::vector<model::ParamRef> params = net_.trainable_parameters();
  const std::string what = "gradient all-reduce (step " + std::to_string(steps_ + 1) + ")";
  if (!device_.is_cpu()) {
    if (const dist::DeviceAllReduce* reducer = dist::device_allreduce(device_.kind)) {
      std::vector<Tensor*> grads;
      for (const model::ParamRef& p : params)
        if (p.param->grad.defined()) grads.push_back(&p.param->grad);
      reducer->sum(grads, what);
      return;
    }
    if (!said_host_fallback_) {  // once per TrainStep: the reader should know the gradients' path
      said_host_fallback_ = true;
      AE_INFO("gradients on " << device_.str() << " are summed over " << dist::size()
                              << " ranks through host memory with MPI: no NCCL for this device (the emulated "
                                 "device, a CUDA build without nccl.h, or AE_NCCL=off)");
    }
  }
  int64_t total = 0;
  for (const model::ParamRef& p : params) total += p.param->value.numel();
  std::vector<float> flat(static_cast<std::size_t>(total), 0.0f);
  int64_t at = 0;
  for (const model::ParamRef& p : params) {
    const Tensor& g = p.param->grad;
    if (g.defined()) {
      const Tensor host = g.to(Device::cpu());
      std::copy(host.f32(), host.f32() + host.numel(), flat.data() + at);
    }
    at += p.param->value.numel();
  }
  dist::allreduce_sum(flat.data(), total, what);
  at = 0;
  for (const model::ParamRef& p : params) {
    Tensor& g = p.param->grad;
    const int64_t n = p.param->value.numel();
    if (g.defined()) {
      const std::vector<float> part(flat.begin() + at, flat.begin() + at + n);
      g = Tensor::from_vector(g.shape(), part).to(g.device());
    }
    at += n;
  }
}

void set_lr(const std::vector<Optimizer*>& optimizers, float lr) {
  for (Optimizer* o : optimizers) o->set_lr(lr);
}

// ---------------------------------------------------------------- position

void Position::to_metadata(std::map<std::string, std::string>& meta) const {
  meta["next_epoch"] = std::to_string(epoch);
  meta["next_batch"] = std::to_string(batch);
  meta["loss_sum"] = format_exact(loss_sum);
  meta["loss_count"] = std::to_string(loss_count);
  meta["skipped"] = std::to_string(skipped);
  meta["train_seconds"] = format_exact(train_seconds);
}

Position Position::from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  Position p;
  p.epoch = static_cast<int64_t>(metadata_number(meta, "next_epoch", path));
  p.batch = static_cast<int64_t>(metadata_number(meta, "next_batch", path));
  p.loss_sum = metadata_number(meta, "loss_sum", path);
  p.loss_count = static_cast<int64_t>(metadata_number(meta, "loss_count", path));
  p.skipped = static_cast<int64_t>(metadata_number(meta, "skipped", path));
  p.train_seconds = metadata_number(meta, "train_seconds", path);
  return p;
}

// ---------------------------------------------------------------- epoch

EpochOutcome run_epoch(data::Loader& loader, int64_t epoch, Position& pos, TrainStep& step, const EpochHooks& hooks) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  EpochOutcome out;
  loader.start_epoch(epoch, pos.batch);
  while (auto b = loader.next()) {
    pos.skipped += b->skipped;
    const int64_t n = step.global_rows(b->images.dim(0));  // the batch over all ranks (data parallel)
    if (n >= 2) {  // BatchNorm needs two samples; a 1-image tail batch is dropped
      const TrainStep::Outcome r = step.run(b->images, b->targets);
      if (!r.finite) {
        out.end = EpochOutcome::End::diverged;
        out.bad_loss = r.loss;
        out.bad_batch = b->index;
        break;
      }
      pos.loss_sum += static_cast<double>(r.loss) * static_cast<double>(n);
      pos.loss_count += n;
      out.images += n;
    }
    pos.batch = b->index + 1;
    if (hooks.after_batch) hooks.after_batch(pos, elapsed());
    if (hooks.should_stop && step.any_rank(hooks.should_stop())) {
      out.end = EpochOutcome::End::stopped;
      break;
    }
  }
  out.seconds = elapsed();
  pos.train_seconds += out.seconds;
  return out;
}

// ---------------------------------------------------------------- evaluation

Predictions predict(model::ResNet18& net, data::Loader& loader, Device device) {
  return Predictor(net, device).run(loader);
}

Predictor::Predictor(model::ResNet18& net, Device device, bool graphs)
    : net_(net), forward_(net, graphs, "the evaluation forward", [&net](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{net.forward(in[0])};
      }),
      device_(device) {}

Predictor::~Predictor() = default;

int Predictor::graph_captures() const { return forward_.graph_captures(); }
int64_t Predictor::graph_replays() const { return forward_.graph_replays(); }

Tensor Predictor::forward(const Tensor& images) {
  AE_CHECK(net_.device() == device_, "Predictor: the model is on " << net_.device().str() << ", not " << device_.str());
  return forward_({images})[0];
}

std::vector<float> Predictor::scores(const Tensor& images) {
  net_.set_training(false);
  net_.set_grad_enabled(false);
  return forward(images).to_vector();
}

Predictions Predictor::run(data::Loader& loader) {
  const bool was_training = net_.training(), had_grad = net_.grad_enabled();
  net_.set_training(false);
  net_.set_grad_enabled(false);
  Predictions p;
  loader.start_epoch(0);
  while (auto b = loader.next()) {
    p.skipped += b->skipped;
    if (b->images.dim(0) == 0) continue;
    const std::vector<float> y = forward(b->images).to_vector();
    const std::vector<float> t = b->targets.to_vector();
    for (std::size_t i = 0; i < y.size(); ++i) {
      p.pred.push_back(y[i]);
      p.truth.push_back(t[i]);
      p.samples.push_back(b->samples[i]);
    }
  }
  net_.set_training(was_training);
  net_.set_grad_enabled(had_grad);
  return p;
}

// ---------------------------------------------------------------- state files

void write_training_state(const std::string& path, model::NamedTensors tensors,
                          const std::vector<Optimizer*>& optimizers, std::map<std::string, std::string> metadata) {
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    for (auto& t : optimizers[i]->state()) tensors.push_back(std::move(t));
    metadata["optimizer_steps" + (i == 0 ? std::string() : "." + std::to_string(i))] =
        std::to_string(optimizers[i]->steps());
  }
  metadata["format"] = model::kCheckpointFormat;
  metadata["format_version"] = model::kCheckpointVersion;
  metadata["kind"] = "training-state";
  st::write_safetensors(path, tensors, metadata);
}

TrainingState read_training_state(const std::string& path, const std::map<std::string, std::string>& fingerprint,
                                  const std::string& what) {
  AE_CHECK(fs::exists(path), "--resume: no training state at '" << path << "'");
  st::SafetensorsFile f = st::read_safetensors(path);
  const auto kind = f.metadata.find("kind");
  AE_CHECK(kind != f.metadata.end() && kind->second == "training-state",
           "'" << path << "' is not a training state written by aesthete");
  std::ostringstream diff;
  for (const auto& [k, v] : fingerprint) {
    const auto it = f.metadata.find(k);
    if (it == f.metadata.end() || it->second != v)
      diff << "\n  " << k << ": saved '" << (it == f.metadata.end() ? "?" : it->second) << "', now '" << v << "'";
  }
  AE_CHECK(diff.str().empty(), "--resume: " << what << " was started with other settings:" << diff.str());
  TrainingState s;
  for (auto& [n, t] : f.tensors) (n.rfind("optim.", 0) == 0 ? s.optimizer : s.model).emplace_back(n, std::move(t));
  s.metadata = std::move(f.metadata);
  return s;
}

void load_optimizers(const TrainingState& state, const std::vector<Optimizer*>& optimizers, const std::string& path) {
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    const std::string key = "optimizer_steps" + (i == 0 ? std::string() : "." + std::to_string(i));
    optimizers[i]->load_state(state.optimizer, static_cast<int64_t>(metadata_number(state.metadata, key, path)));
  }
}

}  // namespace ae::train
