#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "kernels/ops.h"
#include "model/safetensors.h"
#include "runtime/atomic_file.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/philox.h"
#include "runtime/progress.h"
#include "train/labels.h"
#include "train/loader.h"
#include "train/metrics.h"
#include "train/train_loop.h"

namespace ae::train {

namespace fs = std::filesystem;

namespace {

std::string fmt(double v) { return format_exact(v); }

// Settings that must not change between a run and its resumption.
std::map<std::string, std::string> fingerprint(const TrainOptions& o) {
  return {{"train_csv", fs::absolute(o.train_csv).string()},
          {"val_csv", o.val_csv.empty() ? "" : fs::absolute(o.val_csv).string()},
          {"val_fraction", fmt(o.val_fraction)},
          {"head", model::head_name(o.head)},
          {"batch", std::to_string(o.batch)},
          {"lr", fmt(o.lr)},
          {"lr_decay", fmt(o.lr_decay)},
          {"decay_every", std::to_string(o.decay_every)},
          {"weight_decay", fmt(o.weight_decay)},
          {"optimizer", std::to_string(static_cast<int>(o.optimizer))},
          {"dropout", fmt(o.dropout)},
          {"size", std::to_string(o.size)},
          {"resize_to", std::to_string(o.resize_to)},
          {"resize_mode", o.resize_mode == data::ResizeMode::squash ? "squash" : "aspect"},
          {"seed", std::to_string(o.seed)}};
}

struct Split {
  std::vector<data::Sample> train, val;
};

std::vector<data::Sample> to_samples(const std::vector<data::Rating>& rows, const std::string& images_dir) {
  std::vector<data::Sample> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({(fs::path(images_dir) / r.image).string(), static_cast<float>(r.z)});
  return out;
}

// The validation images are drawn from the training file by image (a photo rated several times
// never lands on both sides), with a permutation keyed by the seed.
Split make_split(const TrainOptions& o) {
  const auto train_rows = data::read_labels(o.train_csv).rows;
  AE_CHECK(!train_rows.empty(), "'" << o.train_csv << "' has no rows");
  Split s;
  if (!o.val_csv.empty()) {
    s.train = to_samples(train_rows, o.images_dir);
    s.val = to_samples(data::read_labels(o.val_csv).rows, o.images_dir);
    return s;
  }
  AE_CHECK(o.val_fraction > 0 && o.val_fraction < 1,
           "--val-fraction must be in (0,1), got " << o.val_fraction << " (or give --val-csv)");
  std::vector<std::string> images;
  std::set<std::string> seen;
  for (const auto& r : train_rows)
    if (seen.insert(r.image).second) images.push_back(r.image);
  for (int64_t i = static_cast<int64_t>(images.size()) - 1; i > 0; --i) {
    const uint64_t r = philox::u32(o.seed ^ 0x5A17u, static_cast<uint64_t>(i));
    std::swap(images[static_cast<std::size_t>(i)], images[r % static_cast<uint64_t>(i + 1)]);
  }
  const auto n_val = static_cast<std::size_t>(std::ceil(o.val_fraction * static_cast<double>(images.size())));
  AE_CHECK(n_val >= 2 && n_val < images.size(),
           "--val-fraction " << o.val_fraction << " of " << images.size()
                             << " images leaves too few for validation or training");
  const std::set<std::string> val_images(images.begin(), images.begin() + static_cast<std::ptrdiff_t>(n_val));
  std::vector<data::Rating> tr, va;
  for (const auto& r : train_rows) (val_images.count(r.image) ? va : tr).push_back(r);
  s.train = to_samples(tr, o.images_dir);
  s.val = to_samples(va, o.images_dir);
  return s;
}

// Drops listed images that do not exist; too many missing is an error (wrong --images folder?).
void drop_missing(std::vector<data::Sample>& samples, const TrainOptions& o, const char* which) {
  std::vector<data::Sample> kept;
  std::vector<std::string> missing;
  for (auto& s : samples) (fs::exists(s.path) ? kept.push_back(s) : missing.push_back(s.path));
  if (missing.empty()) return;
  const double frac = static_cast<double>(missing.size()) / static_cast<double>(samples.size());
  std::ostringstream list;
  for (std::size_t i = 0; i < missing.size() && i < 5; ++i) list << "\n  " << missing[i];
  if (missing.size() > 5) list << "\n  ... and " << missing.size() - 5 << " more";
  AE_CHECK(frac <= o.max_missing_fraction, missing.size() << " of " << samples.size() << " " << which
                                                          << " images are missing from '" << o.images_dir
                                                          << "' (more than " << o.max_missing_fraction * 100
                                                          << "%); is --images right?" << list.str());
  AE_WARN(missing.size() << " of " << samples.size() << " " << which << " images are missing and skipped:"
                         << list.str());
  samples = std::move(kept);
}

// Starting weights: every tensor of the init file whose name and shape the new model has
// (an ImageNet backbone gives everything but the head). Adapters never come from here.
void apply_init(model::ResNet18& m, const model::Checkpoint& init) {
  std::map<std::string, Shape> want;
  for (const auto& e : model::expected_layout(m.config().head, m.config().adapters)) want[e.name] = e.shape;
  model::NamedTensors use;
  std::vector<std::string> skipped;
  for (const auto& [name, t] : init.tensors) {
    auto it = want.find(name);
    if (it != want.end() && it->second == t.shape())
      use.emplace_back(name, t);
    else
      skipped.push_back(name);
  }
  AE_CHECK(!use.empty(), "--init file has no tensor that fits a " << model::head_name(m.config().head)
                                                                  << "-head ResNet-18");
  model::LoadOptions lo;
  lo.allow_missing_head = true;
  lo.allow_missing_adapters = true;
  m.load_state_dict(use, lo);
  AE_INFO("init: " << use.size() << " tensors loaded"
                   << (skipped.empty() ? std::string() : ", " + std::to_string(skipped.size()) +
                                                              " not used (e.g. " + skipped.front() + ")"));
}

std::vector<EpochRow> decode_rows(const std::string& csv) {
  std::vector<EpochRow> rows;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    EpochRow r;
    char comma;
    std::istringstream ls(line);
    ls >> r.epoch >> comma >> r.lr >> comma >> r.train_loss >> comma >> r.val_mse >> comma >> r.val_spearman >>
        comma >> r.val_pearson >> comma >> r.images_per_s >> comma >> r.seconds >> comma >> r.skipped;
    AE_CHECK(!ls.fail(), "corrupt metrics row in training state: '" << line << "'");
    rows.push_back(r);
  }
  return rows;
}

void save_state(const std::string& path, model::ResNet18& m, Optimizer& opt, const TrainOptions& o,
                const Position& pos, const TrainResult& result) {
  std::map<std::string, std::string> meta = fingerprint(o);
  pos.to_metadata(meta);
  meta["dropout_step"] = std::to_string(m.dropout_step());
  meta["best_epoch"] = std::to_string(result.best_epoch);
  meta["best_val_mse"] = fmt(result.best_val_mse);
  meta["metrics"] = metrics_csv(result.epochs);
  write_training_state(path, m.state_dict(), {&opt}, std::move(meta));
}

Position load_state(const std::string& path, model::ResNet18& m, Optimizer& opt, const TrainOptions& o,
                    TrainResult& result) {
  const TrainingState s = read_training_state(path, fingerprint(o), "the run in '" + o.out_dir + "'");
  m.load_state_dict(s.model);
  load_optimizers(s, {&opt}, path);
  m.set_dropout_step(static_cast<uint64_t>(metadata_number(s.metadata, "dropout_step", path)));
  result.best_epoch = static_cast<int64_t>(metadata_number(s.metadata, "best_epoch", path));
  result.best_val_mse = metadata_number(s.metadata, "best_val_mse", path);
  const auto metrics = s.metadata.find("metrics");
  AE_CHECK(metrics != s.metadata.end(), "'" << path << "' is not a complete training state: no 'metrics' entry");
  result.epochs = decode_rows(metrics->second);
  return Position::from_metadata(s.metadata, path);
}

struct ValScores {
  double mse = 0, spearman = 0, pearson = 0;
};

ValScores validate(Predictor& predictor, data::Loader& loader) {
  const Predictions p = predictor.run(loader);
  AE_CHECK(p.pred.size() >= 2, "validation: fewer than 2 readable images");
  return {metrics::mse(p.pred, p.truth), metrics::spearman(p.pred, p.truth), metrics::pearson(p.pred, p.truth)};
}

// Everything a generic training run holds while it runs.
struct Run {
  const TrainOptions& o;
  std::string last_path, best_path, metrics_path;
  model::ResNet18 net;
  Optimizer opt;
  TrainStep step;
  data::Loader train_loader, val_loader;
  Predictor val_predictor;  // after net: its graph, if any, replays the validation forward every epoch
  TrainResult result;
  Position pos;
  int64_t steps_this_run = 0;

  Run(const TrainOptions& options, const Split& split, const model::ModelConfig& cfg,
      const std::optional<model::Checkpoint>& init)
      : o(options),
        last_path((fs::path(o.out_dir) / "last.safetensors").string()),
        best_path((fs::path(o.out_dir) / "model.safetensors").string()),
        metrics_path((fs::path(o.out_dir) / "metrics.csv").string()),
        net(cfg),
        opt(prepare(net, o, init), optimizer_config(o)),
        step(net, {&opt}, o.device),
        train_loader(split.train, loader_config(o, /*train=*/true)),
        val_loader(split.val, loader_config(o, /*train=*/false)),
        val_predictor(net, o.device, o.cuda_graphs) {
    step.set_data_parallel(o.sync_bn);
    step.set_graphs(o.cuda_graphs);
  }

  static std::vector<model::ParamRef> prepare(model::ResNet18& net, const TrainOptions& o,
                                              const std::optional<model::Checkpoint>& init) {
    if (!o.resume) {
      if (init)
        apply_init(net, *init);
      else
        AE_WARN("no --init weights: starting from random initialisation (ImageNet weights train far better)");
    }
    net.to(o.device);
    return net.trainable_parameters();
  }
  static OptimizerConfig optimizer_config(const TrainOptions& o) {
    OptimizerConfig oc;
    oc.kind = o.optimizer;
    oc.lr = o.lr;
    oc.weight_decay = o.weight_decay;
    return oc;
  }
  static data::LoaderConfig loader_config(const TrainOptions& o, bool train) {
    data::LoaderConfig c;
    c.batch = o.batch;
    c.workers = o.workers;
    c.seed = o.seed;
    c.shuffle = train;
    c.transform = {o.size, o.resize_to, o.resize_mode, train};
    if (train) {  // data parallel: this rank's shard of every batch (validation sees everything)
      c.shard = dist::rank();
      c.shards = dist::size();
    }
    return c;
  }

  // Trains one epoch from pos; false when the run must end (stop request or divergence).
  bool train_epoch(int64_t epoch) {
    const float lr = step_lr(o.lr, o.lr_decay, o.decay_every, epoch);
    opt.set_lr(lr);
    net.set_training(true);
    Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs),
                      train_loader.batches_per_epoch());
    EpochHooks hooks;
    const int64_t images_before = pos.loss_count;
    hooks.after_batch = [&](const Position& p, double secs) {
      char status[96];
      std::snprintf(status, sizeof status, "loss %.4f  %.1f img/s", p.mean_loss(),
                    secs > 0 ? static_cast<double>(p.loss_count - images_before) / secs : 0.0);
      progress.update(p.batch, status);
    };
    hooks.should_stop = [&] {
      ++steps_this_run;
      return stop_requested(o.stop) || (o.stop_after_steps >= 0 && steps_this_run >= o.stop_after_steps);
    };
    const EpochOutcome r = run_epoch(train_loader, epoch, pos, step, hooks);
    if (r.end == EpochOutcome::End::diverged) {
      progress.finish("diverged");
      // Resuming cannot help: the same settings replay the same data order into the same loss.
      AE_WARN("the loss became " << r.bad_loss << " at epoch " << epoch + 1 << ", batch " << r.bad_batch + 1
                                 << ": training stopped. "
                                 << (result.best_epoch > 0 ? "The best epoch so far is kept in " + best_path + ". "
                                                           : std::string("No epoch had finished, so no model was saved. "))
                                 << "Start a new run (another --out, or delete '" << o.out_dir
                                 << "') with a lower --lr, e.g. " << o.lr / 2 << ".");
      result.diverged = true;
      return false;
    }
    if (r.end == EpochOutcome::End::stopped) {
      if (dist::is_root()) save_state(last_path, net, opt, o, pos, result);
      progress.finish("interrupted");
      result.interrupted = true;
      return false;
    }
    AE_CHECK(pos.loss_count > 0, "epoch " << epoch + 1 << ": no batch of at least 2 readable images");
    progress.finish("validating");
    return true;
  }

  // Validation, model selection, the epoch's files.
  void finish_epoch(int64_t epoch) {
    const ValScores val = validate(val_predictor, val_loader);
    EpochRow row;
    row.epoch = epoch + 1;
    row.lr = step_lr(o.lr, o.lr_decay, o.decay_every, epoch);
    row.train_loss = pos.mean_loss();
    row.val_mse = val.mse;
    row.val_spearman = val.spearman;
    row.val_pearson = val.pearson;
    row.seconds = pos.train_seconds;
    row.images_per_s = pos.train_seconds > 0 ? static_cast<double>(pos.loss_count) / pos.train_seconds : 0;
    row.skipped = pos.skipped;
    result.epochs.push_back(row);
    AE_INFO("epoch " << row.epoch << "/" << o.epochs << ": train loss " << row.train_loss << "  val mse "
                     << row.val_mse << "  spearman " << row.val_spearman << "  pearson " << row.val_pearson);
    if (result.best_epoch == 0 || val.mse < result.best_val_mse) {
      result.best_epoch = row.epoch;
      result.best_val_mse = val.mse;
      if (dist::is_root())  // every rank holds the same weights; one writes them
        model::save_checkpoint(best_path, net, model::TargetNorm{},
                               {{"epoch", std::to_string(row.epoch)},
                                {"val_mse", fmt(val.mse)},
                                {"input_size", std::to_string(o.size)},
                                {"val_spearman", fmt(val.spearman)}});
    }
    pos = Position{};
    pos.epoch = epoch + 1;
    if (!dist::is_root()) return;
    save_state(last_path, net, opt, o, pos, result);
    const std::string csv = metrics_csv(result.epochs);
    atomic_write(metrics_path, csv.data(), csv.size());
  }
};

}  // namespace

std::string metrics_csv(const std::vector<EpochRow>& rows) {
  std::ostringstream os;
  os << "epoch,lr,train_loss,val_mse,val_spearman,val_pearson,images_per_s,seconds,skipped_images\n";
  for (const auto& r : rows)
    os << r.epoch << "," << fmt(r.lr) << "," << fmt(r.train_loss) << "," << fmt(r.val_mse) << ","
       << fmt(r.val_spearman) << "," << fmt(r.val_pearson) << "," << fmt(r.images_per_s) << "," << fmt(r.seconds)
       << "," << r.skipped << "\n";
  return os.str();
}

TrainResult run_training(const TrainOptions& o, const std::optional<model::Checkpoint>& init,
                         const std::function<void(const TrainResult&)>& on_epoch_end) {
  AE_CHECK(o.epochs >= 1, "--epochs must be at least 1, got " << o.epochs);
  AE_CHECK(o.batch >= 2, "--batch must be at least 2 (BatchNorm needs two samples), got " << o.batch);
  AE_CHECK(!o.out_dir.empty(), "--out is required");
  prepare_output_dir(o.out_dir, "--out");
  AE_CHECK(o.resume || !fs::exists(fs::path(o.out_dir) / "last.safetensors"),
           "'" << o.out_dir << "' already holds a training run; add --resume to continue it or choose another --out");
  if (dist::size() > 1)
    AE_INFO("data parallel over " << dist::size() << " ranks: global batch " << o.batch << ", BatchNorm statistics "
                                  << (o.sync_bn ? "of the global batch (--sync-bn)" : "of each rank's shard (--no-sync-bn)"));

  Split split = make_split(o);
  drop_missing(split.train, o, "training");
  drop_missing(split.val, o, "validation");
  AE_CHECK(split.train.size() >= 2 && split.val.size() >= 2, "need at least 2 training and 2 validation images");
  AE_INFO("training on " << split.train.size() << " images, validating on " << split.val.size() << " ("
                         << (o.val_csv.empty() ? "a split of the training images" : o.val_csv) << "), device "
                         << o.device.str());

  model::ModelConfig cfg;
  cfg.head = o.head;
  cfg.adapters = false;
  cfg.dropout = o.dropout;
  cfg.seed = o.seed;
  Run run(o, split, cfg, init);
  if (o.resume) {
    run.pos = load_state(run.last_path, run.net, run.opt, o, run.result);
    AE_INFO("resuming at epoch " << run.pos.epoch + 1 << ", batch " << run.pos.batch);
    // A kill between an epoch's last.safetensors and its metrics.csv leaves the CSV a row short,
    // and when that was the last epoch nothing below would write it again: write it from the state.
    if (dist::is_root()) {
      const std::string csv = metrics_csv(run.result.epochs);
      atomic_write(run.metrics_path, csv.data(), csv.size());
    }
    if (on_epoch_end && !run.result.epochs.empty()) on_epoch_end(run.result);
  }
  for (int64_t epoch = run.pos.epoch; epoch < o.epochs; ++epoch) {
    if (!run.train_epoch(epoch)) return run.result;
    run.finish_epoch(epoch);
    if (on_epoch_end) on_epoch_end(run.result);
  }
  return run.result;
}

}  // namespace ae::train
