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
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/philox.h"
#include "runtime/progress.h"
#include "train/labels.h"
#include "train/loader.h"
#include "train/metrics.h"

namespace ae::train {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};

std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

double parse_double(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  AE_CHECK(it != m.end(), "'" << path << "' is not a complete training state: no '" << key << "' entry");
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  AE_CHECK(end && *end == '\0', "'" << path << "': entry '" << key << "' = '" << it->second << "' is not a number");
  return v;
}

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

struct Position {
  int64_t epoch = 0;  // 0-based epoch to run next
  int64_t batch = 0;  // next batch within it
  double loss_sum = 0;
  int64_t loss_count = 0;
  int64_t skipped = 0;
  double train_seconds = 0;
};

std::string encode_rows(const std::vector<EpochRow>& rows) { return metrics_csv(rows); }

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

void save_state(const std::string& path, model::ResNet18& m, const Optimizer& opt, const TrainOptions& o,
                const Position& pos, const TrainResult& result) {
  model::NamedTensors tensors = m.state_dict();
  for (auto& t : opt.state()) tensors.push_back(std::move(t));
  std::map<std::string, std::string> meta = fingerprint(o);
  meta["format"] = model::kCheckpointFormat;
  meta["format_version"] = model::kCheckpointVersion;
  meta["kind"] = "training-state";
  meta["next_epoch"] = std::to_string(pos.epoch);
  meta["next_batch"] = std::to_string(pos.batch);
  meta["loss_sum"] = fmt(pos.loss_sum);
  meta["loss_count"] = std::to_string(pos.loss_count);
  meta["skipped"] = std::to_string(pos.skipped);
  meta["train_seconds"] = fmt(pos.train_seconds);
  meta["optimizer_steps"] = std::to_string(opt.steps());
  meta["dropout_step"] = std::to_string(m.dropout_step());
  meta["best_epoch"] = std::to_string(result.best_epoch);
  meta["best_val_mse"] = fmt(result.best_val_mse);
  meta["metrics"] = encode_rows(result.epochs);
  st::write_safetensors(path, tensors, meta);
}

Position load_state(const std::string& path, model::ResNet18& m, Optimizer& opt, const TrainOptions& o,
                    TrainResult& result) {
  AE_CHECK(fs::exists(path), "--resume: no training state at '" << path << "'");
  st::SafetensorsFile f = st::read_safetensors(path);
  auto kind = f.metadata.find("kind");
  AE_CHECK(kind != f.metadata.end() && kind->second == "training-state",
           "'" << path << "' is not a training state written by aesthete train");
  std::ostringstream diff;
  for (const auto& [k, v] : fingerprint(o)) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end() || it->second != v)
      diff << "\n  " << k << ": saved '" << (it == f.metadata.end() ? "?" : it->second) << "', now '" << v << "'";
  }
  AE_CHECK(diff.str().empty(), "--resume: the run in '" << o.out_dir
                                                        << "' was started with other settings:" << diff.str());
  model::NamedTensors weights, optim;
  for (auto& [n, t] : f.tensors) (n.rfind("optim.", 0) == 0 ? optim : weights).emplace_back(n, t);
  m.load_state_dict(weights);
  opt.load_state(optim, static_cast<int64_t>(parse_double(f.metadata, "optimizer_steps", path)));
  m.set_dropout_step(static_cast<uint64_t>(parse_double(f.metadata, "dropout_step", path)));
  Position p;
  p.epoch = static_cast<int64_t>(parse_double(f.metadata, "next_epoch", path));
  p.batch = static_cast<int64_t>(parse_double(f.metadata, "next_batch", path));
  p.loss_sum = parse_double(f.metadata, "loss_sum", path);
  p.loss_count = static_cast<int64_t>(parse_double(f.metadata, "loss_count", path));
  p.skipped = static_cast<int64_t>(parse_double(f.metadata, "skipped", path));
  p.train_seconds = parse_double(f.metadata, "train_seconds", path);
  result.best_epoch = static_cast<int64_t>(parse_double(f.metadata, "best_epoch", path));
  result.best_val_mse = parse_double(f.metadata, "best_val_mse", path);
  result.epochs = decode_rows(f.metadata["metrics"]);
  return p;
}

struct ValScores {
  double mse = 0, spearman = 0, pearson = 0;
};

ValScores validate(model::ResNet18& m, data::Loader& loader, Device device) {
  m.set_training(false);
  m.set_grad_enabled(false);
  std::vector<double> pred, truth;
  loader.start_epoch(0);
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    const Tensor y = m.forward(b->images.to(device));
    for (float v : y.to_vector()) pred.push_back(v);
    for (float v : b->targets.to_vector()) truth.push_back(v);
  }
  m.set_grad_enabled(true);
  AE_CHECK(pred.size() >= 2, "validation: fewer than 2 readable images");
  return {metrics::mse(pred, truth), metrics::spearman(pred, truth), metrics::pearson(pred, truth)};
}

}  // namespace

void request_stop() { g_stop.store(true); }
bool stop_requested() { return g_stop.load(); }
void clear_stop_request() { g_stop.store(false); }

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
  fs::create_directories(o.out_dir);
  const std::string last_path = (fs::path(o.out_dir) / "last.safetensors").string();
  const std::string best_path = (fs::path(o.out_dir) / "model.safetensors").string();
  const std::string metrics_path = (fs::path(o.out_dir) / "metrics.csv").string();
  AE_CHECK(o.resume || !fs::exists(last_path), "'" << o.out_dir << "' already holds a training run; add --resume "
                                                   << "to continue it or choose another --out");

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
  model::ResNet18 net(cfg);
  if (!o.resume) {
    if (init)
      apply_init(net, *init);
    else
      AE_WARN("no --init weights: starting from random initialisation (ImageNet weights train far better)");
  }
  net.to(o.device);
  OptimizerConfig oc;
  oc.kind = o.optimizer;
  oc.lr = o.lr;
  oc.weight_decay = o.weight_decay;
  Optimizer opt(net.trainable_parameters(), oc);

  TrainResult result;
  Position pos;
  if (o.resume) {
    pos = load_state(last_path, net, opt, o, result);
    AE_INFO("resuming at epoch " << pos.epoch + 1 << ", batch " << pos.batch);
  }

  data::LoaderConfig tl;
  tl.batch = o.batch;
  tl.workers = o.workers;
  tl.seed = o.seed;
  tl.shuffle = true;
  tl.transform = {o.size, o.resize_to, o.resize_mode, true};
  data::Loader train_loader(split.train, tl);
  data::LoaderConfig vl = tl;
  vl.shuffle = false;
  vl.transform.train = false;
  data::Loader val_loader(split.val, vl);

  int64_t steps_this_run = 0;
  for (int64_t epoch = pos.epoch; epoch < o.epochs; ++epoch) {
    const float lr = step_lr(o.lr, o.lr_decay, o.decay_every, epoch);
    opt.set_lr(lr);
    net.set_training(true);
    train_loader.start_epoch(epoch, pos.batch);
    Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs),
                      train_loader.batches_per_epoch());
    const auto t0 = std::chrono::steady_clock::now();
    int64_t images_this_run = 0;
    while (auto b = train_loader.next()) {
      pos.skipped += b->skipped;
      const int64_t n = b->images.dim(0);
      if (n >= 2) {  // BatchNorm needs two samples; a 1-image tail batch is dropped
        net.zero_grad();
        const Tensor y = net.forward(b->images.to(o.device));
        const Tensor target = b->targets.to(o.device);
        const float loss = ops::mse_loss_forward(y, target).item();
        if (!std::isfinite(loss)) {
          AE_WARN("the loss became " << loss << " at epoch " << epoch + 1 << ", batch " << b->index + 1
                                     << ": training stopped. The last good state is kept in " << last_path
                                     << "; lower --lr and run again with --resume.");
          result.diverged = true;
          return result;
        }
        net.backward(ops::mse_loss_backward(y, target));
        opt.step();
        pos.loss_sum += static_cast<double>(loss) * static_cast<double>(n);
        pos.loss_count += n;
        images_this_run += n;
        ++steps_this_run;
      }
      pos.batch = b->index + 1;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char status[96];
      std::snprintf(status, sizeof status, "loss %.4f  %.1f img/s",
                    pos.loss_count ? pos.loss_sum / static_cast<double>(pos.loss_count) : 0.0,
                    secs > 0 ? static_cast<double>(images_this_run) / secs : 0.0);
      progress.update(pos.batch, status);
      if (stop_requested() || (o.stop_after_steps >= 0 && steps_this_run >= o.stop_after_steps)) {
        pos.train_seconds += secs;
        save_state(last_path, net, opt, o, pos, result);
        progress.finish("interrupted");
        result.interrupted = true;
        return result;
      }
    }
    const double train_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    pos.train_seconds += train_secs;
    AE_CHECK(pos.loss_count > 0, "epoch " << epoch + 1 << ": no batch of at least 2 readable images");

    const ValScores val = validate(net, val_loader, o.device);
    EpochRow row;
    row.epoch = epoch + 1;
    row.lr = lr;
    row.train_loss = pos.loss_sum / static_cast<double>(pos.loss_count);
    row.val_mse = val.mse;
    row.val_spearman = val.spearman;
    row.val_pearson = val.pearson;
    row.seconds = pos.train_seconds;
    row.images_per_s = pos.train_seconds > 0 ? static_cast<double>(pos.loss_count) / pos.train_seconds : 0;
    row.skipped = pos.skipped;
    result.epochs.push_back(row);
    char status[160];
    std::snprintf(status, sizeof status, "train loss %.4f  val mse %.4f  spearman %.3f  pearson %.3f",
                  row.train_loss, row.val_mse, row.val_spearman, row.val_pearson);
    progress.finish(status);

    if (result.best_epoch == 0 || val.mse < result.best_val_mse) {
      result.best_epoch = row.epoch;
      result.best_val_mse = val.mse;
      model::save_checkpoint(best_path, net, model::TargetNorm{},
                             {{"epoch", std::to_string(row.epoch)}, {"val_mse", fmt(val.mse)}, {"input_size", std::to_string(o.size)},
                              {"val_spearman", fmt(val.spearman)}});
    }
    pos = Position{};
    pos.epoch = epoch + 1;
    save_state(last_path, net, opt, o, pos, result);
    const std::string csv = metrics_csv(result.epochs);
    atomic_write(metrics_path, csv.data(), csv.size());
    if (on_epoch_end) on_epoch_end(result);
  }
  return result;
}

}  // namespace ae::train
