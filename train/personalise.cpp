#include "train/personalise.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

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
#include "train/trainer.h"

namespace ae::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* mode_name(PersonaliseMode m) {
  switch (m) {
    case PersonaliseMode::head: return "head";
    case PersonaliseMode::full: return "full";
    case PersonaliseMode::adapters: return "adapters";
  }
  return "?";
}

PersonaliseMode parse_mode(const std::string& text) {
  if (text == "head") return PersonaliseMode::head;
  if (text == "full") return PersonaliseMode::full;
  if (text == "adapters") return PersonaliseMode::adapters;
  AE_FAIL("--mode must be adapters, head or full, got '" << text << "'");
}

const char* select_name(EpochSelect s) { return s == EpochSelect::fixed ? "fixed" : "val"; }

EpochSelect parse_select(const std::string& text) {
  if (text == "fixed") return EpochSelect::fixed;
  if (text == "val") return EpochSelect::val;
  AE_FAIL("--select must be fixed or val, got '" << text << "'");
}

void apply_defaults(PersonaliseOptions& o) {
  const bool small_k = o.k < 50;
  if (o.repeats <= 0) o.repeats = small_k ? 10 : 3;
  switch (o.mode) {
    case PersonaliseMode::head:
      if (o.epochs <= 0) o.epochs = 20;
      if (o.lr <= 0) o.lr = small_k ? 1e-3f : 1e-4f;
      if (o.decay_every <= 0) o.decay_every = small_k ? 5 : 2;
      if (o.weight_decay < 0) o.weight_decay = 0;
      break;
    case PersonaliseMode::full:
      if (o.epochs <= 0) o.epochs = 20;
      if (o.lr <= 0) o.lr = 1e-4f;
      if (o.decay_every <= 0) o.decay_every = 2;
      if (o.weight_decay < 0) o.weight_decay = 0;
      break;
    case PersonaliseMode::adapters:
      if (o.epochs <= 0) o.epochs = 100;
      if (o.lr <= 0) o.lr = 1e-3f;
      if (o.decay_every <= 0) o.decay_every = 5;
      if (o.weight_decay < 0) o.weight_decay = 0.01f;
      break;
  }
  if (o.resize_to <= 0) o.resize_to = o.size * 256 / 224;
}

model::StateScope scope_of(PersonaliseMode mode) {
  return mode == PersonaliseMode::full ? model::StateScope::all : model::StateScope::user;
}

void configure_mode(model::ResNet18& net, PersonaliseMode mode) {
  using model::ParamGroup;
  const bool full = mode == PersonaliseMode::full, adapters = mode == PersonaliseMode::adapters;
  net.set_trainable(ParamGroup::backbone, full);
  net.set_trainable(ParamGroup::bn_affine, full || adapters);
  net.set_trainable(ParamGroup::adapters, adapters);
  net.set_trainable(ParamGroup::head, true);
  net.set_backbone_batchnorm_eval(mode == PersonaliseMode::head);
}

std::vector<std::unique_ptr<Optimizer>> make_optimizers(model::ResNet18& net, PersonaliseMode mode, float lr,
                                                        float weight_decay) {
  std::vector<model::ParamRef> body, head;
  for (const model::ParamRef& r : net.trainable_parameters())
    (r.param->group == model::ParamGroup::head ? head : body).push_back(r);
  OptimizerConfig c;
  c.kind = OptimizerKind::adam;
  c.lr = lr;
  std::vector<std::unique_ptr<Optimizer>> out;
  if (mode == PersonaliseMode::adapters) {
    // The original's two Adams: weight decay on adapters and BatchNorm, none on the head.
    c.weight_decay = weight_decay;
    out.push_back(std::make_unique<Optimizer>(body, c));
    c.weight_decay = 0;
    out.push_back(std::make_unique<Optimizer>(head, c));
  } else {
    c.weight_decay = weight_decay;
    body.insert(body.end(), head.begin(), head.end());
    out.push_back(std::make_unique<Optimizer>(body, c));
  }
  return out;
}

namespace {

std::string fmt(double v) {
  if (std::isnan(v)) return "nan";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The seed of one run: its draw, augmentation and dropout depend on nothing else, so the run gives
// the same result alone, in any order, or in another process. The fit on all ratings is repeat -1.
uint64_t run_seed(uint64_t seed, const std::string& user, int repeat) {
  return mix(mix(seed, fnv1a(user)), static_cast<uint64_t>(static_cast<int64_t>(repeat) + 1));
}

double nan() { return std::numeric_limits<double>::quiet_NaN(); }

// rho and MSE over the entries of `idx` whose prediction is known (unreadable images are NaN).
struct Scores {
  double rho = nan(), mse = nan();
  int64_t used = 0;
};
Scores score_subset(const std::vector<double>& pred, const std::vector<double>& truth, const std::vector<int64_t>& idx) {
  std::vector<double> p, t;
  for (int64_t i : idx) {
    if (std::isnan(pred[static_cast<std::size_t>(i)])) continue;
    p.push_back(pred[static_cast<std::size_t>(i)]);
    t.push_back(truth[static_cast<std::size_t>(i)]);
  }
  Scores s;
  s.used = static_cast<int64_t>(p.size());
  if (p.size() >= 2) {
    s.rho = metrics::spearman(p, t);
    s.mse = metrics::mse(p, t);
  }
  return s;
}

struct UserData {
  std::string id;
  std::vector<data::Sample> samples;  // the user's ratings, file order
};

struct Draw {
  std::vector<int64_t> train, val, test;  // indices into UserData::samples
};

Draw draw_split(const PersonaliseOptions& o, const UserData& u, int repeat) {
  const int64_t n = static_cast<int64_t>(u.samples.size());
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  const uint64_t key = run_seed(o.seed, u.id, repeat) ^ 0xD8A3u;
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t r = (static_cast<uint64_t>(philox::u32(key, 2 * i)) << 32) | philox::u32(key, 2 * i + 1);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(r % static_cast<uint64_t>(i + 1))]);
  }
  Draw d;
  const int64_t k = repeat < 0 ? n : o.k;  // the fit uses every rating
  int64_t n_val = 0;
  if (o.select == EpochSelect::val)
    n_val = std::max<int64_t>(2, static_cast<int64_t>(std::llround(o.val_fraction * static_cast<double>(k))));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = order[static_cast<std::size_t>(i)];
    if (i < k - n_val)
      d.train.push_back(s);
    else if (i < k)
      d.val.push_back(s);
    else
      d.test.push_back(s);
  }
  // Sorted, so that the loaders' own seeded shuffles alone decide the order.
  std::sort(d.train.begin(), d.train.end());
  std::sort(d.val.begin(), d.val.end());
  std::sort(d.test.begin(), d.test.end());
  return d;
}

std::vector<UserData> read_users(const PersonaliseOptions& o) {
  const data::LabelFile labels = data::read_labels(o.ratings_csv);
  std::vector<UserData> all;
  std::map<std::string, std::size_t> index;
  for (const data::Rating& r : labels.rows) {
    AE_CHECK(!r.user.empty(), "'" << o.ratings_csv << "' has ratings without a user: personalisation needs the "
                                      "per-worker file (FLICKR-AES test_workers_dataset_normalized.csv) or a CSV "
                                      "image,score,user");
    auto [it, fresh] = index.emplace(r.user, all.size());
    if (fresh) all.push_back(UserData{r.user, {}});
    all[it->second].samples.push_back({(fs::path(o.images_dir) / r.image).string(), static_cast<float>(r.z)});
  }
  AE_CHECK(!all.empty(), "'" << o.ratings_csv << "' has no ratings");
  std::vector<UserData> chosen;
  if (o.users.empty()) {
    chosen = std::move(all);
  } else {
    for (const std::string& id : o.users) {
      const auto it = index.find(id);
      AE_CHECK(it != index.end(), "--users: no user '" << id << "' in '" << o.ratings_csv << "' (it has "
                                                       << all.size() << " users, e.g. '" << all.front().id << "')");
      chosen.push_back(all[it->second]);
    }
  }
  const int64_t min_val = o.select == EpochSelect::val ? 2 : 0;
  auto check_k = [&](const char* which) {
    for (const UserData& u : chosen) {
      const auto n = static_cast<int64_t>(u.samples.size());
      AE_CHECK(o.k >= 2 + min_val && o.k <= n - 2,
               "--k " << o.k << " does not fit user '" << u.id << "', who has " << n << " " << which << "ratings: k must be in 2.."
                      << n - 2 << (min_val ? " (and at least 4 with --select val)" : "")
                      << " so that at least 2 images are left to test on");
      if (o.select == EpochSelect::val) {
        const auto n_val = std::max<int64_t>(2, static_cast<int64_t>(std::llround(o.val_fraction * o.k)));
        AE_CHECK(o.k - n_val >= 2, "--select val: --val-fraction " << o.val_fraction << " of k=" << o.k
                                                                   << " leaves fewer than 2 images to train on");
      }
    }
  };
  check_k("");
  // Missing files are dropped before the draws (an unreadable file that exists is skipped by the
  // loaders and counted instead). Many missing means a wrong --images folder.
  int64_t listed = 0;
  std::vector<std::string> missing;
  for (UserData& u : chosen) {
    std::vector<data::Sample> kept;
    for (data::Sample& s : u.samples) {
      ++listed;
      if (fs::exists(s.path))
        kept.push_back(std::move(s));
      else
        missing.push_back(s.path);
    }
    u.samples = std::move(kept);
  }
  if (!missing.empty()) {
    std::ostringstream list;
    for (std::size_t i = 0; i < missing.size() && i < 5; ++i) list << "\n  " << missing[i];
    if (missing.size() > 5) list << "\n  ... and " << missing.size() - 5 << " more";
    AE_CHECK(static_cast<double>(missing.size()) <= 0.1 * static_cast<double>(listed),
             missing.size() << " of " << listed << " rated images are missing from --images '" << o.images_dir
                            << "' (more than 10%); is --images right?" << list.str());
    AE_WARN(missing.size() << " of " << listed << " rated images are missing and left out:" << list.str());
  }
  check_k("readable ");
  return chosen;
}

// Settings that shape the results: a resumed run must share them.
std::map<std::string, std::string> fingerprint(const PersonaliseOptions& o, const std::string& digest) {
  std::string users;
  for (const auto& u : o.users) users += (users.empty() ? "" : ",") + u;
  return {{"generic_digest", digest},
          {"ratings", fs::absolute(o.ratings_csv).string()},
          {"images", fs::absolute(o.images_dir).string()},
          {"k", std::to_string(o.k)},
          {"mode", mode_name(o.mode)},
          {"repeats", std::to_string(o.repeats)},
          {"epochs", std::to_string(o.epochs)},
          {"lr", format_exact(o.lr)},
          {"lr_decay", format_exact(o.lr_decay)},
          {"decay_every", std::to_string(o.decay_every)},
          {"weight_decay", format_exact(o.weight_decay)},
          {"select", select_name(o.select)},
          {"val_fraction", format_exact(o.val_fraction)},
          {"batch", std::to_string(o.batch)},
          {"users", users},
          {"only_repeat", std::to_string(o.only_repeat)},
          {"size", std::to_string(o.size)},
          {"resize_to", std::to_string(o.resize_to)},
          {"seed", std::to_string(o.seed)},
          {"fit_all", o.fit_all ? "1" : "0"}};
}

// NaN survives JSON as null.
json num_json(double v) { return std::isnan(v) ? json(nullptr) : json(v); }
double json_num(const json& j) { return j.is_null() ? nan() : j.get<double>(); }
json vec_json(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(num_json(x));
  return a;
}
std::vector<double> json_vec(const json& j) {
  std::vector<double> v;
  for (const auto& x : j) v.push_back(json_num(x));
  return v;
}

json row_json(const RunRow& r) {
  return json{{"user", r.user},
              {"repeat", r.repeat},
              {"n_train", r.n_train},
              {"n_val", r.n_val},
              {"n_test", r.n_test},
              {"rho_generic", num_json(r.rho_generic)},
              {"rho_personal", num_json(r.rho_personal)},
              {"mse_generic", num_json(r.mse_generic)},
              {"mse_personal", num_json(r.mse_personal)},
              {"epochs", r.epochs},
              {"oracle_epoch", r.oracle_epoch},
              {"oracle_rho", num_json(r.oracle_rho)},
              {"oracle_mse", num_json(r.oracle_mse)},
              {"test_rho", vec_json(r.test_rho)},
              {"test_mse", vec_json(r.test_mse)},
              {"train_loss", vec_json(r.train_loss)},
              {"val_mse", vec_json(r.val_mse)},
              {"seconds", r.seconds},
              {"unreadable", r.unreadable}};
}

// A run's row before training: its sizes and epoch 0, which is the generic model itself (the
// state starts as an exact copy of it), scored from the per-user generic predictions.
RunRow epoch_zero_row(const std::string& user, const Draw& d, int repeat, const std::vector<double>& generic_pred,
                      const std::vector<double>& truth) {
  RunRow row;
  row.user = user;
  row.repeat = repeat;
  row.n_train = static_cast<int64_t>(d.train.size());
  row.n_val = static_cast<int64_t>(d.val.size());
  row.n_test = static_cast<int64_t>(d.test.size());
  const Scores g_test = score_subset(generic_pred, truth, d.test);
  row.rho_generic = g_test.rho;
  row.mse_generic = g_test.mse;
  row.test_rho.push_back(g_test.rho);
  row.test_mse.push_back(g_test.mse);
  row.train_loss.push_back(nan());
  if (!d.val.empty()) row.val_mse.push_back(score_subset(generic_pred, truth, d.val).mse);
  return row;
}

RunRow row_from_json(const json& j) {
  RunRow r;
  r.user = j.at("user").get<std::string>();
  r.repeat = j.at("repeat").get<int>();
  r.n_train = j.at("n_train").get<int64_t>();
  r.n_val = j.at("n_val").get<int64_t>();
  r.n_test = j.at("n_test").get<int64_t>();
  r.rho_generic = json_num(j.at("rho_generic"));
  r.rho_personal = json_num(j.at("rho_personal"));
  r.mse_generic = json_num(j.at("mse_generic"));
  r.mse_personal = json_num(j.at("mse_personal"));
  r.epochs = j.at("epochs").get<int64_t>();
  r.oracle_epoch = j.at("oracle_epoch").get<int64_t>();
  r.oracle_rho = json_num(j.at("oracle_rho"));
  r.oracle_mse = json_num(j.at("oracle_mse"));
  r.test_rho = json_vec(j.at("test_rho"));
  r.test_mse = json_vec(j.at("test_mse"));
  r.train_loss = json_vec(j.at("train_loss"));
  r.val_mse = json_vec(j.at("val_mse"));
  r.seconds = j.at("seconds").get<double>();
  r.unreadable = j.at("unreadable").get<int64_t>();
  return r;
}

// Index of the first maximum (or minimum) that is not NaN; 0 when all are NaN.
std::size_t first_best(const std::vector<double>& v, bool maximise) {
  std::size_t best = 0;
  bool found = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) continue;
    if (!found || (maximise ? v[i] > v[best] : v[i] < v[best])) best = i, found = true;
  }
  return best;
}

std::vector<data::Sample> pick(const UserData& u, const std::vector<int64_t>& idx) {
  std::vector<data::Sample> out;
  for (int64_t i : idx) out.push_back(u.samples[static_cast<std::size_t>(i)]);
  return out;
}

// The personalised model's numbers from the curves: fixed = the last epoch; val = the lowest
// validation MSE (epoch 0, the generic model, included); oracle = the best test rho (the
// original's optimistic selection, reported apart).
void select_epoch(RunRow& row, EpochSelect select, int epochs) {
  row.epochs = select == EpochSelect::fixed ? epochs : static_cast<int64_t>(first_best(row.val_mse, false));
  row.rho_personal = row.test_rho[static_cast<std::size_t>(row.epochs)];
  row.mse_personal = row.test_mse[static_cast<std::size_t>(row.epochs)];
  const std::size_t oracle = first_best(row.test_rho, true);
  row.oracle_epoch = static_cast<int64_t>(oracle);
  row.oracle_rho = row.test_rho[oracle];
  row.oracle_mse = row.test_mse[first_best(row.test_mse, false)];
}

using Clock = std::chrono::steady_clock;

// The protocol's state while it runs.
class Protocol {
 public:
  Protocol(PersonaliseOptions o, model::SharedModel& shared, const PersonaliseHooks& hooks)
      : o_(std::move(o)), shared_(shared), hooks_(hooks) {
    state_path_ = (fs::path(o_.out_dir) / "state.safetensors").string();
    fingerprint_ = fingerprint(o_, shared_.digest());
  }

  PersonaliseResult run() {
    check_options();
    prepare_output_dir(o_.out_dir, "--out");
    AE_CHECK(o_.resume || !fs::exists(state_path_),
             "'" << o_.out_dir << "' already holds a personalisation run; add --resume to continue it or choose "
                                  "another --out");
    // Under mpirun every rank checks the folder before rank 0 writes anything into it.
    dist::barrier("personalise: start");
    users_ = read_users(o_);
    result_.options = o_;
    for (const UserData& u : users_) result_.users.push_back(u.id);
    if (dist::is_root()) write_draws();
    if (o_.resume) restore();
    plan_runs();
    started_ = Clock::now();
    for (std::size_t ui = 0; ui < users_.size() && !result_.interrupted; ++ui) {
      if (!owns(ui)) continue;
      const UserData& u = users_[ui];
      generic_pred_.clear();
      for (int repeat : repeats_) {
        if (finished(u.id, repeat)) continue;
        if (generic_pred_.empty()) generic_predictions(u);
        if (!run_one(ui, repeat)) {
          result_.interrupted = true;
          break;
        }
      }
    }
    if (dist::size() > 1) merge_ranks();
    if (result_.interrupted) return result_;
    if (dist::is_root()) write_outputs();
    return result_;
  }

 private:
  // Under mpirun users are dealt to ranks in turn; each (user, repeat) is seeded on its own, so
  // the merged rows are the ones a single process computes.
  bool owns(std::size_t user_index) const {
    return static_cast<int>(user_index % static_cast<std::size_t>(dist::size())) == dist::rank();
  }

  // Rank 0 collects every rank's rows (and user-file sizes), puts them in the order one process
  // finishes them (users in file order, repeats in order, the fit last) and writes the shared
  // files. A rank stopped early (Ctrl-C) stops the job's files at the runs finished everywhere:
  // state.safetensors then lists those, and each rank's unfinished run starts again on --resume.
  void merge_ranks() {
    json mine{{"rows", json::array()},
              {"interrupted", result_.interrupted},
              {"files", result_.user_file_bytes},
              {"trainable", result_.trainable_parameters},
              {"state_bytes", result_.user_state_bytes}};
    std::map<std::string, std::size_t> user_index;
    for (std::size_t i = 0; i < users_.size(); ++i) user_index[users_[i].id] = i;
    for (const RunRow& r : result_.rows) {
      const auto it = user_index.find(r.user);
      if (it != user_index.end() && owns(it->second)) mine["rows"].push_back(row_json(r));
    }
    // Unbounded: a rank that drew lighter users waits here for the others to finish theirs.
    const std::vector<std::string> all =
        dist::gather_to_root(mine.dump(), "personalise: collecting results", dist::Wait::unbounded);
    if (!dist::is_root()) return;
    std::vector<RunRow> rows;
    for (const std::string& text : all) {
      const json j = json::parse(text);
      for (const auto& r : j.at("rows")) rows.push_back(row_from_json(r));
      result_.interrupted |= j.at("interrupted").get<bool>();
      for (const auto& [u, b] : j.at("files").items()) result_.user_file_bytes[u] = b.get<int64_t>();
      result_.trainable_parameters = std::max(result_.trainable_parameters, j.at("trainable").get<int64_t>());
      result_.user_state_bytes = std::max(result_.user_state_bytes, j.at("state_bytes").get<int64_t>());
    }
    auto order = [&](const RunRow& r) {
      const auto u = user_index.find(r.user);
      const auto rep = std::find(repeats_.begin(), repeats_.end(), r.repeat);
      return std::make_pair(u == user_index.end() ? users_.size() : u->second, rep - repeats_.begin());
    };
    std::stable_sort(rows.begin(), rows.end(), [&](const RunRow& a, const RunRow& b) { return order(a) < order(b); });
    result_.rows = std::move(rows);
    write_partial_results();
    model::UserState none;  // no current run: the state file lists the finished ones only
    save_state("", 0, none, {}, Position{}, RunRow{}, nullptr);
    if (hooks_.on_run_end) hooks_.on_run_end(result_);
  }

  void check_options() {
    AE_CHECK(o_.batch >= 2, "--batch must be at least 2 (BatchNorm needs two samples), got " << o_.batch);
    AE_CHECK(o_.epochs >= 1 && o_.repeats >= 1, "--epochs and --repeats must be at least 1");
    AE_CHECK(!o_.out_dir.empty(), "--out is required");
    AE_CHECK(o_.only_repeat < o_.repeats, "--only-repeat " << o_.only_repeat << " is not below --repeats " << o_.repeats);
    AE_CHECK(o_.val_fraction > 0 && o_.val_fraction < 1, "--val-fraction must be in (0,1), got " << o_.val_fraction);
  }

  void plan_runs() {
    repeats_.clear();
    if (o_.only_repeat >= 0) {
      repeats_.push_back(o_.only_repeat);
    } else {
      for (int r = 0; r < o_.repeats; ++r) repeats_.push_back(r);
    }
    if (o_.fit_all) repeats_.push_back(-1);
    int64_t owned = 0;
    for (std::size_t ui = 0; ui < users_.size(); ++ui) owned += owns(ui) ? 1 : 0;
    total_runs_ = owned * static_cast<int64_t>(repeats_.size());
  }

  bool finished(const std::string& user, int repeat) const {
    for (const RunRow& r : result_.rows)
      if (r.user == user && r.repeat == repeat) return true;
    return false;
  }

  void write_draws() {
    std::ostringstream os;
    os << "user,repeat,role,image\n";
    for (const UserData& u : users_) {
      std::vector<int> reps;
      if (o_.only_repeat >= 0)
        reps.push_back(o_.only_repeat);
      else
        for (int r = 0; r < o_.repeats; ++r) reps.push_back(r);
      for (int r : reps) {
        const Draw d = draw_split(o_, u, r);
        auto put = [&](const std::vector<int64_t>& idx, const char* role) {
          for (int64_t i : idx)
            os << u.id << "," << r << "," << role << ","
               << fs::path(u.samples[static_cast<std::size_t>(i)].path).filename().string() << "\n";
        };
        put(d.train, "train");
        put(d.val, "val");
        put(d.test, "test");
      }
    }
    const std::string s = os.str();
    atomic_write((fs::path(o_.out_dir) / "draws.csv").string(), s.data(), s.size());
  }

  data::LoaderConfig loader_config(uint64_t seed, bool train) const {
    data::LoaderConfig c;
    c.batch = o_.batch;
    c.workers = o_.workers;
    c.seed = seed;
    c.shuffle = train;
    c.transform = {o_.size, o_.resize_to, data::ResizeMode::squash, train};
    return c;
  }

  // The generic model's predictions for every rating of `u` (NaN where unreadable), once per user.
  void generic_predictions(const UserData& u) {
    shared_.bind_generic();
    data::Loader loader(u.samples, loader_config(0, false));
    const Predictions p = predict(shared_.net(), loader, o_.device);
    generic_pred_.assign(u.samples.size(), nan());
    truth_.assign(u.samples.size(), 0.0);
    for (std::size_t i = 0; i < u.samples.size(); ++i) truth_[i] = u.samples[i].target;
    for (std::size_t i = 0; i < p.samples.size(); ++i) generic_pred_[static_cast<std::size_t>(p.samples[i])] = p.pred[i];
  }

  // Scores of the bound model over `idx` of the user's samples, read through `loader` (made by
  // subset_loader over the same idx).
  Scores evaluate(const UserData& u, const std::vector<int64_t>& idx, Predictor& predictor, data::Loader& loader,
                  int64_t* unreadable) {
    if (idx.empty()) return {};
    const Predictions p = predictor.run(loader);
    if (unreadable) *unreadable = p.skipped;
    std::vector<double> pred(idx.size(), nan()), truth(idx.size());
    std::vector<int64_t> all(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
      truth[i] = u.samples[static_cast<std::size_t>(idx[i])].target;
      all[i] = static_cast<int64_t>(i);
    }
    for (std::size_t i = 0; i < p.samples.size(); ++i) pred[static_cast<std::size_t>(p.samples[i])] = p.pred[i];
    return score_subset(pred, truth, all);
  }

  // "epoch e/E  loss L  ETA t": the ETA from the mean epoch time of this process so far.
  std::string epoch_status(int64_t epoch, double loss) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
    epochs_done_ += 1;
    const double per_epoch = elapsed / static_cast<double>(epochs_done_);
    const int64_t runs_left = total_runs_ - static_cast<int64_t>(result_.rows.size()) - 1;
    const double left = per_epoch * static_cast<double>(o_.epochs - epoch - 1 + runs_left * o_.epochs);
    char status[160];
    std::snprintf(status, sizeof status, "epoch %lld/%d  loss %.4f  ETA %s", static_cast<long long>(epoch + 1),
                  o_.epochs, loss, format_duration(left).c_str());
    return status;
  }

  // The run a --resume continues: where it stopped, with its optimiser state and curves so far.
  struct Current {
    std::string user;
    int repeat = 0;
    Position pos;
    RunRow row;
    uint64_t dropout_step = 0;
    std::shared_ptr<model::UserState> best;  // --select val in the fit: the state at the best epoch
    model::NamedTensors state_tensors, optimizer_tensors;
    std::map<std::string, std::string> metadata;
  };

  RunRow first_row(const UserData& u, const Draw& d, int repeat) const {
    return epoch_zero_row(u.id, d, repeat, generic_pred_, truth_);
  }

  // One (user, repeat): false when interrupted.
  bool run_one(std::size_t ui, int repeat) {
    const UserData& u = users_[ui];
    const auto t0 = Clock::now();
    const Draw d = draw_split(o_, u, repeat);
    const uint64_t seed = run_seed(o_.seed, u.id, repeat);
    model::ResNet18& net = shared_.net();

    shared_.bind_generic();
    auto state = shared_.fresh_state(scope_of(o_.mode), u.id);
    shared_.bind(state);
    configure_mode(net, o_.mode);
    auto owned = make_optimizers(net, o_.mode, o_.lr, o_.weight_decay);
    std::vector<Optimizer*> opts;
    for (auto& p : owned) opts.push_back(p.get());
    if (result_.trainable_parameters == 0) {
      for (const model::ParamRef& r : net.trainable_parameters()) result_.trainable_parameters += r.param->value.numel();
      result_.user_state_bytes = state->nbytes();
    }
    TrainStep step(net, opts, o_.device);
    step.set_graphs(o_.cuda_graphs);
    Predictor predictor(net, o_.device, o_.cuda_graphs);  // the test and validation forwards of every epoch
    data::Loader train_loader(pick(u, d.train), loader_config(seed, true));
    // Made once per run, so an unreadable image is reported once, not once per epoch.
    data::Loader test_loader(pick(u, d.test), loader_config(0, false));
    data::Loader val_loader(pick(u, d.val), loader_config(0, false));

    RunRow row = first_row(u, d, repeat);
    std::shared_ptr<model::UserState> best;  // the fit with --select val keeps its best epoch
    Position pos;
    net.set_dropout_step(seed >> 40);

    if (resume_ && resume_->user == u.id && resume_->repeat == repeat) {
      restore_current(state, opts, pos, row);
      best = resume_->best;
      resume_.reset();
      AE_INFO("resuming user " << u.id << (repeat >= 0 ? ", repeat " + std::to_string(repeat + 1) : ", fit")
                               << " at epoch " << pos.epoch + 1 << ", batch " << pos.batch);
    }
    if (repeat < 0 && !d.val.empty() && !best) best = shared_.snapshot();

    const std::string label = "user " + std::to_string(ui + 1) + "/" + std::to_string(users_.size()) + " " + u.id +
                              (repeat >= 0 ? " repeat " + std::to_string(repeat + 1) + "/" + std::to_string(o_.repeats)
                                           : " fit on all " + std::to_string(d.train.size() + d.val.size()));
    Progress progress(label, o_.epochs);
    auto last_save = Clock::now();
    for (int64_t epoch = pos.epoch; epoch < o_.epochs; ++epoch) {
      set_lr(opts, step_lr(o_.lr, o_.lr_decay, o_.decay_every, epoch));
      net.set_training(true);
      EpochHooks hooks;
      hooks.should_stop = [&] {
        ++steps_this_process_;
        return stop_requested(o_.stop) || (o_.stop_after_steps >= 0 && steps_this_process_ >= o_.stop_after_steps);
      };
      const EpochOutcome r = run_epoch(train_loader, epoch, pos, step, hooks);
      if (r.end == EpochOutcome::End::diverged)
        AE_FAIL("user " << u.id << (repeat >= 0 ? ", repeat " + std::to_string(repeat + 1) : ", fit") << ": the loss became "
                        << r.bad_loss << " at epoch " << epoch + 1 << ", batch " << r.bad_batch + 1
                        << "; start a new run with a lower --lr (now " << o_.lr << ")");
      if (r.end == EpochOutcome::End::stopped) {
        if (dist::is_root()) save_state(u.id, repeat, *state, opts, pos, row, best.get());
        progress.finish("interrupted");
        return false;
      }
      net.set_training(false);
      row.train_loss.push_back(pos.loss_count > 0 ? pos.mean_loss() : nan());
      // The test images: curves and oracle columns only (see the header).
      int64_t unreadable = 0;
      const Scores t = evaluate(u, d.test, predictor, test_loader, &unreadable);
      row.unreadable = unreadable;
      row.test_rho.push_back(t.rho);
      row.test_mse.push_back(t.mse);
      if (!d.val.empty()) {
        row.val_mse.push_back(evaluate(u, d.val, predictor, val_loader, nullptr).mse);
        if (best && first_best(row.val_mse, false) == row.val_mse.size() - 1) best = shared_.snapshot();
      }
      pos = Position{};
      pos.epoch = epoch + 1;
      progress.update(epoch + 1, epoch_status(epoch, row.train_loss.back()));
      if (epoch + 1 < o_.epochs &&
          std::chrono::duration<double>(Clock::now() - last_save).count() >= o_.checkpoint_seconds &&
          dist::is_root()) {  // the other ranks' runs restart on --resume (merge_ranks)
        save_state(u.id, repeat, *state, opts, pos, row, best.get());
        last_save = Clock::now();
      }
    }
    select_epoch(row, o_.select, o_.epochs);
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (row.n_test > 0 && row.unreadable > 0)
      AE_WARN("user " << u.id << ": " << row.unreadable << " of " << row.n_test << " test images could not be read");
    if (repeat < 0) write_fit(u.id, state, best);
    char status[160];
    if (repeat >= 0) {
      std::snprintf(status, sizeof status, "rho %.3f -> %.3f (%+.3f)", row.rho_generic, row.rho_personal,
                    row.rho_personal - row.rho_generic);
    } else {
      std::snprintf(status, sizeof status, "wrote users/%s.safetensors", u.id.c_str());
    }
    progress.finish(status);
    result_.rows.push_back(std::move(row));
    if (dist::is_root()) {  // shared files: rank 0 alone writes them (merge_ranks adds the others' rows)
      save_state("", 0, *state, {}, Position{}, RunRow{}, nullptr);
      write_partial_results();
      if (hooks_.on_run_end) hooks_.on_run_end(result_);
    }
    return true;
  }

  void write_fit(const std::string& user, const std::shared_ptr<model::UserState>& state,
                 const std::shared_ptr<model::UserState>& best) {
    AE_CHECK(!user.empty() && user.find_first_of("/\\") == std::string::npos && user[0] != '.',
             "--fit-all: user id '" << user << "' cannot be a file name");
    const fs::path dir = fs::path(o_.out_dir) / "users";
    fs::create_directories(dir);
    const std::string path = (dir / (user + ".safetensors")).string();
    shared_.bind(best ? best : state);
    if (o_.mode == PersonaliseMode::full) {
      model::save_checkpoint(path, shared_.net(), shared_.norm(),
                             {{"user_id", user}, {"generic_digest", shared_.digest()}, {"input_size", std::to_string(o_.size)}});
    } else {
      shared_.save_bound_user_file(path, user);
    }
    result_.user_file_bytes[user] = static_cast<int64_t>(fs::file_size(path));
  }

  // state.safetensors: the finished rows, and the current run when `user` is not empty.
  void save_state(const std::string& user, int repeat, model::UserState& state, const std::vector<Optimizer*>& opts,
                  const Position& pos, const RunRow& row, const model::UserState* best) {
    std::map<std::string, std::string> meta = fingerprint_;
    json rows = json::array();
    for (const RunRow& r : result_.rows) rows.push_back(row_json(r));
    meta["finished"] = rows.dump();
    model::NamedTensors tensors;
    if (!user.empty()) {
      meta["current_user"] = user;
      meta["current_repeat"] = std::to_string(repeat);
      meta["current_row"] = row_json(row).dump();
      meta["dropout_step"] = std::to_string(shared_.net().dropout_step());
      pos.to_metadata(meta);
      append_state(tensors, "state.", state, /*from_model=*/true);
      if (best) append_state(tensors, "best.", *best, false);
    }
    write_training_state(state_path_, std::move(tensors), opts, std::move(meta));
  }

  // The state's entries as tensors (counters as i64 scalars, read from the model when it is bound).
  void append_state(model::NamedTensors& out, const std::string& prefix, const model::UserState& s, bool from_model) {
    std::map<std::string, int64_t> counters;
    if (from_model)
      for (const model::StateEntry& e : shared_.net().state_entries())
        if (e.counter != nullptr) counters[e.name] = *e.counter;
    for (const auto& e : s.entries) {
      if (e.is_counter) {
        Tensor n = Tensor::empty({}, DType::i64);
        *n.data<int64_t>() = from_model ? counters.at(e.name) : e.counter;
        out.emplace_back(prefix + e.name, n);
      } else {
        out.emplace_back(prefix + e.name, e.value.to(Device::cpu()));
      }
    }
  }

  void restore() {
    const TrainingState s = read_training_state(state_path_, fingerprint_, "the personalisation in '" + o_.out_dir + "'");
    // The progress records are JSON in the state's metadata: a damaged one is an ae::Error naming
    // the file and the record, never a JSON library exception.
    const auto record = [&](const std::string& key, const auto& use) {
      const auto it = s.metadata.find(key);
      AE_CHECK(it != s.metadata.end(), "--resume: '" << state_path_ << "' has no '" << key << "' record");
      try {
        use(json::parse(it->second));
      } catch (const json::exception& e) {
        AE_FAIL("--resume: '" << state_path_ << "' is damaged: its '" << key << "' record does not read (" << e.what()
                              << "); start again in another --out");
      }
    };
    record("finished", [&](const json& list) {
      AE_CHECK(list.is_array(), "--resume: '" << state_path_ << "' is damaged: its 'finished' record is not a list");
      for (const auto& j : list) result_.rows.push_back(row_from_json(j));
    });
    const auto cu = s.metadata.find("current_user");
    if (cu != s.metadata.end()) {
      resume_ = std::make_unique<Current>();
      resume_->user = cu->second;
      resume_->repeat = static_cast<int>(metadata_number(s.metadata, "current_repeat", state_path_));
      resume_->pos = Position::from_metadata(s.metadata, state_path_);
      record("current_row", [&](const json& row) { resume_->row = row_from_json(row); });
      resume_->dropout_step = static_cast<uint64_t>(metadata_number(s.metadata, "dropout_step", state_path_));
      resume_->optimizer_tensors = s.optimizer;
      resume_->metadata = s.metadata;
      model::NamedTensors best;
      for (const auto& [n, t] : s.model) {
        if (n.rfind("state.", 0) == 0) resume_->state_tensors.emplace_back(n.substr(6), t);
        if (n.rfind("best.", 0) == 0) best.emplace_back(n.substr(5), t);
      }
      if (!best.empty()) {
        resume_->best = shared_.fresh_state(scope_of(o_.mode), resume_->user);
        fill_state(*resume_->best, best);
      }
    }
    AE_INFO("resuming: " << result_.rows.size() << " runs finished"
                         << (resume_ ? ", continuing user " + resume_->user : std::string()));
  }

  void fill_state(model::UserState& st, const model::NamedTensors& tensors) {
    std::map<std::string, const Tensor*> by_name;
    for (const auto& [n, t] : tensors) by_name[n] = &t;
    for (auto& e : st.entries) {
      const auto it = by_name.find(e.name);
      AE_CHECK(it != by_name.end(), "'" << state_path_ << "' lacks the state entry '" << e.name << "'");
      if (e.is_counter) {
        e.counter = *it->second->data<int64_t>();
      } else {
        AE_CHECK(it->second->shape() == e.value.shape(), "'" << state_path_ << "': state entry '" << e.name << "' is "
                                                             << it->second->desc() << ", expected " << e.value.desc());
        e.value = it->second->to(e.value.device()).clone();  // new storage: no cache can mistake it for the old
      }
    }
  }

  void restore_current(const std::shared_ptr<model::UserState>& state, const std::vector<Optimizer*>& opts,
                       Position& pos, RunRow& row) {
    // Unbind `state` before its entries are replaced, or binding it again would keep the layers'
    // live counters over the restored ones (SharedModel::bind).
    shared_.bind_generic();
    fill_state(*state, resume_->state_tensors);
    shared_.bind(state);
    TrainingState s;
    s.optimizer = resume_->optimizer_tensors;
    s.metadata = resume_->metadata;
    load_optimizers(s, opts, state_path_);
    pos = resume_->pos;
    row = resume_->row;
    shared_.net().set_dropout_step(resume_->dropout_step);
  }

  void write_partial_results() {
    const std::string csv = results_csv(result_.rows, o_.mode, o_.k);
    atomic_write((fs::path(o_.out_dir) / "results.csv").string(), csv.data(), csv.size());
  }

  void write_outputs() {
    write_partial_results();
    const std::string js = summary_json(result_);
    atomic_write((fs::path(o_.out_dir) / "summary.json").string(), js.data(), js.size());
  }

  PersonaliseOptions o_;
  model::SharedModel& shared_;
  const PersonaliseHooks& hooks_;
  std::string state_path_;
  std::map<std::string, std::string> fingerprint_;
  std::vector<UserData> users_;
  std::vector<int> repeats_;
  int64_t total_runs_ = 0;
  std::vector<double> generic_pred_, truth_;
  PersonaliseResult result_;
  std::unique_ptr<Current> resume_;
  int64_t steps_this_process_ = 0;
  int64_t epochs_done_ = 0;
  Clock::time_point started_;
};

}  // namespace

PersonaliseResult run_personalisation(PersonaliseOptions options, model::SharedModel& shared,
                                      const PersonaliseHooks& hooks) {
  apply_defaults(options);
  Protocol p(std::move(options), shared, hooks);
  return p.run();
}

// The same steps as Protocol::run_one (draw, fresh state, modes, optimisers, seeds, epochs,
// selection), for one person given in memory and without state files, reports or resume.
FitResult fit_user(model::SharedModel& shared, const std::string& user_id, const std::vector<data::Sample>& ratings,
                   PersonaliseOptions o) {
  apply_defaults(o);
  const auto n = static_cast<int64_t>(ratings.size());
  AE_CHECK(o.batch >= 2, "personalise: batch must be at least 2 (BatchNorm needs two samples), got " << o.batch);
  AE_CHECK(o.epochs >= 1, "personalise: epochs must be at least 1, got " << o.epochs);
  AE_CHECK(o.val_fraction > 0 && o.val_fraction < 1, "personalise: val_fraction must be in (0,1), got " << o.val_fraction);
  const int64_t min_train = o.select == EpochSelect::val ? 4 : 2;
  if (o.k == 0) {
    AE_CHECK(n >= min_train, "personalise: " << n << " ratings; at least " << min_train << " are needed"
                                             << (o.select == EpochSelect::val ? " with select val" : ""));
  } else {
    AE_CHECK(o.k >= min_train && o.k <= n - 2,
             "personalise: k " << o.k << " does not fit " << n << " ratings: k must be in " << min_train << ".." << n - 2
                               << " so that at least 2 ratings are left to test on (or k = None to train on all)");
  }
  for (const data::Sample& s : ratings) {
    AE_CHECK(std::isfinite(s.target), "personalise: the rating of '" << s.path << "' is " << s.target);
    if (!fs::exists(s.path)) throw Error("personalise: photo '" + s.path + "' does not exist", ErrorKind::file);
  }
  UserData u{user_id, ratings};
  const int repeat = o.k == 0 ? -1 : 0;
  const Draw d = draw_split(o, u, repeat);
  if (o.select == EpochSelect::val)
    AE_CHECK(d.train.size() >= 2, "personalise: val_fraction " << o.val_fraction << " leaves fewer than 2 ratings to train on");
  const uint64_t seed = run_seed(o.seed, user_id, repeat);
  model::ResNet18& net = shared.net();
  auto loader_config = [&](uint64_t s, bool train) {
    data::LoaderConfig c;
    c.batch = o.batch;
    c.workers = o.workers;
    c.seed = s;
    c.shuffle = train;
    c.transform = {o.size, o.resize_to, data::ResizeMode::squash, train};
    return c;
  };

  // Epoch 0 is the generic model: its predictions on every rating, as the protocol makes them.
  std::vector<double> generic_pred(u.samples.size(), nan()), truth(u.samples.size());
  for (std::size_t i = 0; i < u.samples.size(); ++i) truth[i] = u.samples[i].target;
  shared.bind_generic();
  if (!d.test.empty() || !d.val.empty()) {
    data::Loader loader(u.samples, loader_config(0, false));
    const Predictions p = predict(net, loader, o.device);
    for (std::size_t i = 0; i < p.samples.size(); ++i) generic_pred[static_cast<std::size_t>(p.samples[i])] = p.pred[i];
  }
  Predictor predictor(net, o.device, o.cuda_graphs);  // the test and validation forwards of every epoch
  auto evaluate = [&](const std::vector<int64_t>& idx, data::Loader& loader, int64_t* unreadable) -> Scores {
    if (idx.empty()) return {};
    const Predictions p = predictor.run(loader);
    if (unreadable) *unreadable = p.skipped;
    std::vector<double> pred(idx.size(), nan()), t(idx.size());
    std::vector<int64_t> all(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
      t[i] = u.samples[static_cast<std::size_t>(idx[i])].target;
      all[i] = static_cast<int64_t>(i);
    }
    for (std::size_t i = 0; i < p.samples.size(); ++i) pred[static_cast<std::size_t>(p.samples[i])] = p.pred[i];
    return score_subset(pred, t, all);
  };

  auto state = shared.fresh_state(scope_of(o.mode), user_id);
  shared.bind(state);
  configure_mode(net, o.mode);
  net.set_grad_enabled(true);  // scoring on the same model (train/score.h) turns gradients off
  auto owned = make_optimizers(net, o.mode, o.lr, o.weight_decay);
  std::vector<Optimizer*> opts;
  for (auto& p : owned) opts.push_back(p.get());
  TrainStep step(net, opts, o.device);
  step.set_graphs(o.cuda_graphs);
  data::Loader train_loader(pick(u, d.train), loader_config(seed, true));
  data::Loader test_loader(pick(u, d.test), loader_config(0, false));
  data::Loader val_loader(pick(u, d.val), loader_config(0, false));

  FitResult result;
  result.row = epoch_zero_row(user_id, d, repeat, generic_pred, truth);
  RunRow& row = result.row;
  std::shared_ptr<model::UserState> best;
  if (!d.val.empty()) best = shared.snapshot();
  net.set_dropout_step(seed >> 40);

  const auto t0 = Clock::now();
  Progress progress("personalise " + user_id + " (" + mode_name(o.mode) + ", " + std::to_string(d.train.size()) +
                        " ratings)", o.epochs);
  Position pos;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    set_lr(opts, step_lr(o.lr, o.lr_decay, o.decay_every, epoch));
    net.set_training(true);
    EpochHooks hooks;
    hooks.should_stop = [&] { return stop_requested(o.stop); };
    const EpochOutcome r = run_epoch(train_loader, epoch, pos, step, hooks);
    if (r.end == EpochOutcome::End::diverged)
      AE_FAIL("personalise " << user_id << ": the loss became " << r.bad_loss << " at epoch " << epoch + 1
                             << ", batch " << r.bad_batch + 1 << "; try a lower lr (now " << o.lr << ")");
    if (r.end == EpochOutcome::End::stopped) {
      progress.finish("interrupted");
      result.interrupted = true;
      return result;
    }
    net.set_training(false);
    row.train_loss.push_back(pos.loss_count > 0 ? pos.mean_loss() : nan());
    int64_t unreadable = 0;
    const Scores t = evaluate(d.test, test_loader, &unreadable);
    row.unreadable = unreadable;
    row.test_rho.push_back(t.rho);
    row.test_mse.push_back(t.mse);
    if (!d.val.empty()) {
      row.val_mse.push_back(evaluate(d.val, val_loader, nullptr).mse);
      if (first_best(row.val_mse, false) == row.val_mse.size() - 1) best = shared.snapshot();
    }
    pos = Position{};
    pos.epoch = epoch + 1;
    char status[96];
    std::snprintf(status, sizeof status, "epoch %lld/%d  loss %.4f", static_cast<long long>(epoch + 1), o.epochs,
                  row.train_loss.back());
    progress.update(epoch + 1, status);
  }
  select_epoch(row, o.select, o.epochs);
  row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  shared.bind(best ? best : state);  // written back: the BatchNorm counters of the bound state
  result.state = shared.snapshot();
  char status[160];
  if (row.n_test > 0)
    std::snprintf(status, sizeof status, "rho %.3f -> %.3f on %lld held-out ratings", row.rho_generic,
                  row.rho_personal, static_cast<long long>(row.n_test));
  else
    std::snprintf(status, sizeof status, "trained on all %lld ratings", static_cast<long long>(row.n_train + row.n_val));
  progress.finish(status);
  return result;
}

std::string results_csv(const std::vector<RunRow>& rows, PersonaliseMode mode, int k) {
  std::ostringstream os;
  os << "user,repeat,mode,k,n_train,n_val,n_test,rho_generic,rho_personal,delta_rho,mse_generic,mse_personal,"
        "delta_mse,epochs,oracle_epoch,oracle_rho,oracle_delta_rho,oracle_delta_mse,unreadable_test_images\n";
  for (const RunRow& r : rows) {
    if (r.repeat < 0) continue;
    os << r.user << "," << r.repeat << "," << mode_name(mode) << "," << k << "," << r.n_train << "," << r.n_val << ","
       << r.n_test << "," << fmt(r.rho_generic) << "," << fmt(r.rho_personal) << ","
       << fmt(r.rho_personal - r.rho_generic) << "," << fmt(r.mse_generic) << "," << fmt(r.mse_personal) << ","
       << fmt(r.mse_personal - r.mse_generic) << "," << r.epochs << "," << r.oracle_epoch << "," << fmt(r.oracle_rho)
       << "," << fmt(r.oracle_rho - r.rho_generic) << "," << fmt(r.oracle_mse - r.mse_generic) << "," << r.unreadable
       << "\n";
  }
  return os.str();
}

namespace {

struct Stat {
  double mean = nan(), std = nan();
  int64_t n = 0;
};
Stat stat(const std::vector<double>& v) {
  Stat s;
  std::vector<double> x;
  for (double d : v)
    if (!std::isnan(d)) x.push_back(d);
  s.n = static_cast<int64_t>(x.size());
  if (x.empty()) return s;
  double sum = 0;
  for (double d : x) sum += d;
  s.mean = sum / static_cast<double>(x.size());
  if (x.size() >= 2) {
    double ss = 0;
    for (double d : x) ss += (d - s.mean) * (d - s.mean);
    s.std = std::sqrt(ss / static_cast<double>(x.size() - 1));
  }
  return s;
}
json stat_json(const Stat& s) { return json{{"mean", num_json(s.mean)}, {"std", num_json(s.std)}, {"n", s.n}}; }

}  // namespace

std::string summary_json(const PersonaliseResult& r) {
  const PersonaliseOptions& o = r.options;
  using Getter = double (*)(const RunRow&);
  const std::vector<std::pair<const char*, Getter>> fields = {
      {"rho_generic", [](const RunRow& x) { return x.rho_generic; }},
      {"rho_personal", [](const RunRow& x) { return x.rho_personal; }},
      {"delta_rho", [](const RunRow& x) { return x.rho_personal - x.rho_generic; }},
      {"mse_generic", [](const RunRow& x) { return x.mse_generic; }},
      {"mse_personal", [](const RunRow& x) { return x.mse_personal; }},
      {"delta_mse", [](const RunRow& x) { return x.mse_personal - x.mse_generic; }},
      {"oracle_delta_rho", [](const RunRow& x) { return x.oracle_rho - x.rho_generic; }},
  };
  json per_user = json::array();
  std::map<std::string, std::vector<double>> user_means;  // field -> one mean per user
  double seconds = 0;
  int64_t users_timed = 0;
  for (const std::string& u : r.users) {
    json ju{{"user", u}};
    double user_seconds = 0;
    bool any = false;
    for (const auto& [name, get] : fields) {
      std::vector<double> v;
      for (const RunRow& row : r.rows)
        if (row.user == u && row.repeat >= 0) v.push_back(get(row));
      const Stat s = stat(v);
      ju[name] = stat_json(s);
      user_means[name].push_back(s.mean);
      any |= s.n > 0;
    }
    for (const RunRow& row : r.rows)
      if (row.user == u) user_seconds += row.seconds;
    ju["seconds"] = user_seconds;
    if (any) seconds += user_seconds, ++users_timed;
    per_user.push_back(ju);
  }
  json means;
  for (const auto& [name, get] : fields) {
    std::vector<double> all;
    for (const RunRow& row : r.rows)
      if (row.repeat >= 0) all.push_back(get(row));
    means[name] = {{"over_runs", stat_json(stat(all))}, {"over_user_means", stat_json(stat(user_means[name]))}};
  }
  json files = json::object();
  for (const auto& [u, b] : r.user_file_bytes) files[u] = b;
  json j{{"mode", mode_name(o.mode)},
         {"k", o.k},
         {"select", select_name(o.select)},
         {"epochs", o.epochs},
         {"repeats", o.only_repeat >= 0 ? 1 : o.repeats},
         {"lr", o.lr},
         {"decay_every", o.decay_every},
         {"weight_decay", o.weight_decay},
         {"batch", o.batch},
         {"size", o.size},
         {"seed", o.seed},
         {"users", r.users.size()},
         {"metrics", means},
         {"per_user", per_user},
         {"trainable_parameters_per_user", r.trainable_parameters},
         {"user_state_tensor_bytes", r.user_state_bytes},
         {"user_file_bytes", files},
         {"seconds_per_user_measured", users_timed ? seconds / static_cast<double>(users_timed) : 0.0},
         {"notes",
          "rho_personal uses the epoch chosen without the test images (select fixed or val); oracle_delta_rho is "
          "the original system's optimistic number (best epoch chosen on the test images)"}};
  return j.dump(2) + "\n";
}

}  // namespace ae::train
