// `mpirun -np 2 aesthete train`: data-parallel training of a few steps against one process fed
// the same global batches. With --sync-bn the two runs compute the same function; they differ
// only in the order of float sums, so the weights, BatchNorm statistics and losses must agree
// within the tolerance derived below. Also: a rank that fails ends the job with its message.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "model/resnet18.h"
#include "model/safetensors.h"
#include "tests/mpi/mpi_run.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

constexpr int kBatch = 16;

// The generic part of a people set (textured images: few exactly equal activations), 70 rows:
// 7 validate, 63 train in global batches 16, 16, 16, 15; with 2 ranks the last is split 7 + 8, so
// the uneven weighting of the ranks is exercised too.
const data::PeopleDataset& people() {
  static const data::PeopleDataset d = [] {
    const std::string root = test::build_dir() + "/mpi_train";
    fs::remove_all(root);
    data::PeopleConfig c;
    c.count = 130;
    c.people_images = 60;
    c.ratings_per_person = 30;
    return data::make_people_dataset(root + "/data", c);
  }();
  return d;
}

std::string root() { return test::build_dir() + "/mpi_train"; }

// SGD (momentum 0.9), not Adam: Adam's first step is lr * sign(g), which a rounding difference can
// flip where g is near zero; SGD's update is linear in the gradient, so the bound below holds.
std::string train_cmd(const std::string& out, const std::string& extra) {
  return test::aesthete_binary() + " train --train-csv " + people().train_csv + " --images " + people().images_dir +
         " --out " + out + " --size 32 --resize-to 36 --batch " + std::to_string(kBatch) +
         " --epochs 1 --optimizer sgd --head seed --seed 1 --device cpu --workers 1 " + extra;
}

std::map<std::string, Tensor> tensors_of(const std::string& path) {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : st::read_safetensors(path).tensors) out[name] = t;
  return out;
}

bool skipped() {
  const std::string why = test::mpi_unavailable();
  if (why.empty()) return false;
  test::skip_binary(why);
  return true;
}

// One thread per process (the two ranks share the 2 cores of a CI machine), in both runs.
const std::string kThreads = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ";

// One process's and two ranks' runs of `extra`, both required to succeed.
void run_both(const std::string& name, const std::string& extra) {
  const auto r1 = test::run_command(kThreads + train_cmd(root() + "/" + name + "_one", extra));
  INFO(r1.err);
  REQUIRE(r1.exit_code == 0);
  const auto r2 = test::run_command(kThreads + test::mpirun(2, train_cmd(root() + "/" + name + "_two", extra)));
  INFO(r2.err);
  REQUIRE(r2.exit_code == 0);
  CHECK(r2.err.find("aesthete: 2 ranks (MPI): rank 0 cpu, rank 1 cpu") != std::string::npos);
  CHECK(r2.err.find("data parallel over 2 ranks") != std::string::npos);
}

// The tolerance. One process and two ranks compute the same sums in a different order: a weight
// gradient of conv1 sums n = B * 16 * 16 = 4096 products at 32 px (the longest sum of the network);
// the two ranks sum 2048 each and MPI adds the halves; BatchNorm sums (in double) are added across
// ranks in another order; each rank's loss gradient is scaled by rows / global rows instead of
// divided by the global rows. With round-off u = 2^-24 behaving like a random walk (Higham,
// "Accuracy and Stability of Numerical Algorithms" §2.8), reordering a sum of n terms changes it by
// about sqrt(n) * u of its magnitude: 64 * 6e-8 = 3.8e-6; 10x headroom gives rel = 3.8e-5. An SGD
// update is linear in the gradient, so a value v that moved from v0 differs by at most
// rel * max|v - v0| over its tensor, plus one rounding of the result (<= 2u|v|):
//     |v2 - v1| <= rel * max|v1 - v0| + 2u|v1|,
// for weights (v0: the seeded initial weights) and BatchNorm running statistics (v0: 0 and 1).
// Losses: rel relative.
//
// Why the weights are compared after one step only: ReLU and max-pool have kinks, so after the
// first update a rounding-size difference can flip one activation's side of zero and move one
// channel's gradient by O(1) (seen: one of 512 channels of layer4 at the second step); the runs
// then stay close but no longer within a rounding bound. Several steps are checked at lr 0, where
// every forward runs the initial weights: the per-step losses (the epoch's mean), the running
// statistics accumulated over all four steps, and the validation MSE.
const double kU = std::ldexp(1.0, -24), kRel = 10 * std::sqrt(kBatch * 16.0 * 16.0) * kU;

// Every f32 entry of the model in both files within the bound above; counters equal.
void check_state(const std::string& one, const std::string& two) {
  model::ModelConfig cfg;  // the trainer's model before its first step: head seed, seed 1
  cfg.seed = 1;
  model::ResNet18 fresh(cfg);
  const auto a = tensors_of(one), b = tensors_of(two);
  REQUIRE(a.size() == b.size());
  int64_t compared = 0;
  double worst = 0;  // the largest |v2 - v1| / tolerance seen, for the log
  for (const auto& entry : fresh.state_dict()) {
    const std::string& name = entry.first;
    const Tensor& t0 = entry.second;
    INFO(name);
    REQUIRE(a.count(name) == 1);
    REQUIRE(b.count(name) == 1);
    const Tensor &t1 = a.at(name), &t2 = b.at(name);
    REQUIRE(t1.shape() == t2.shape());
    if (t1.dtype() != DType::f32) {  // num_batches_tracked: the same count of training steps
      CHECK(*t1.data<int64_t>() == *t2.data<int64_t>());
      continue;
    }
    const float *p0 = t0.f32(), *p1 = t1.f32(), *p2 = t2.f32();
    double moved = 0;
    for (int64_t i = 0; i < t1.numel(); ++i) moved = std::max(moved, std::fabs(double(p1[i]) - p0[i]));
    for (int64_t i = 0; i < t1.numel(); ++i) {
      const double tol = kRel * moved + 2 * kU * std::fabs(p1[i]), diff = std::fabs(double(p2[i]) - p1[i]);
      if (tol > 0) worst = std::max(worst, diff / tol);
      if (diff > tol) {
        FAIL_CHECK("element " << i << ": one process " << p1[i] << ", two ranks " << p2[i] << ", tolerance " << tol
                              << " (moved " << moved << ")");
        break;
      }
    }
    ++compared;
  }
  CHECK(compared > 100);
  MESSAGE("largest difference: " << worst << " of the tolerance");
}

}  // namespace

TEST_CASE("two ranks with --sync-bn make the first step one process makes on the same global batch") {
  if (skipped()) return;
  run_both("step", "--lr 0.001 --stop-after-steps 1");
  check_state(root() + "/step_one/last.safetensors", root() + "/step_two/last.safetensors");
}

TEST_CASE("two ranks with --sync-bn see one process's batches for a whole epoch (uneven last batch)") {
  if (skipped()) return;
  run_both("epoch", "--lr 0");
  check_state(root() + "/epoch_one/last.safetensors", root() + "/epoch_two/last.safetensors");
  const auto m1 = test::read_csv_rows(root() + "/epoch_one/metrics.csv");
  const auto m2 = test::read_csv_rows(root() + "/epoch_two/metrics.csv");
  REQUIRE(m1.size() == 1);
  REQUIRE(m2.size() == 1);
  for (const char* col : {"train_loss", "val_mse"}) {
    INFO(col);
    const double x1 = std::stod(m1[0].at(col)), x2 = std::stod(m2[0].at(col));
    CHECK(std::fabs(x1 - x2) <= kRel * std::fabs(x1));
  }

  // Without --sync-bn the ranks normalise with their own shards' statistics: the same comparison
  // must tell that apart, or it would not be checking the synchronisation at all.
  const auto r = test::run_command(kThreads + test::mpirun(2, train_cmd(root() + "/local_two", "--lr 0 --no-sync-bn")));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("of each rank's shard (--no-sync-bn)") != std::string::npos);
  const auto m3 = test::read_csv_rows(root() + "/local_two/metrics.csv");
  REQUIRE(m3.size() == 1);
  const double x1 = std::stod(m1[0].at("train_loss")), x3 = std::stod(m3[0].at("train_loss"));
  CHECK(std::fabs(x1 - x3) > kRel * std::fabs(x1));
}

TEST_CASE("a rank that fails ends the whole job with its message") {
  if (!test::mpi_unavailable().empty()) return;  // the skip is reported by the case above
  const std::string out = root() + "/fails";
  // Rank 1 alone is pointed at a folder without the images: it stops at once, rank 0 must not wait.
  const std::string cmd = std::string("sh -c '") + "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then d=/nonexistent; else d=" +
                          people().images_dir + "; fi; exec " + test::aesthete_binary() + " train --train-csv " +
                          people().train_csv + " --images $d --out " + out +
                          " --size 32 --resize-to 36 --batch 16 --epochs 1 --device cpu --workers 1'";
  const auto r = test::run_command(kThreads + "AE_COLLECTIVE_TIMEOUT=600 " + test::mpirun(2, cmd));
  INFO(r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("error (rank 1 of 2):") != std::string::npos);
  CHECK(r.err.find("/nonexistent") != std::string::npos);
}
