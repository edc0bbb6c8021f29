// Personalisation on the CUDA backend against the CPU backend (DESIGN.md "Per-user state on a
// shared backbone"): one SharedModel per device, built from the same random generic checkpoint
// (seed head, dropout off as in tests/gpu/test_cuda_model.cpp: see no_dropout()).
//   - binding on the device: A -> B -> A gives A's outputs bit for bit, bind_generic() gives the
//     generic outputs bit for bit, and those match the CPU SharedModel's;
//   - each mode (adapters, head, full): a fresh state bound on both devices, configure_mode,
//     make_optimizers, two TrainSteps on one batch; the losses and every entry of the trained state
//     agree with the CPU's (counters exactly); what the mode freezes is bit for bit the generic
//     model's on the device, and the generic state itself was not written;
//   - a user file saved from the device-bound state loads on the CPU SharedModel and scores as the
//     device does.
// Small shapes (batches of 3 and 4 images of 32x32, the smallest input that still leaves a 1x1 map
// in layer4) keep the emulated device's run short. Every device buffer has red zones.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "model/shared_model.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/user_states.h"
#include "train/personalise.h"
#include "train/train_loop.h"

using namespace ae;
using namespace ae::gputest;
using ae::model::SharedModel;
using ae::model::UserState;
using ae::train::PersonaliseMode;

namespace {

// The SharedModels' configuration: dropout off, as in tests/gpu/test_cuda_model.cpp, whose
// tolerances this test uses. The masks themselves are the same on both backends (one Philox
// stream, tests/gpu/test_cuda_elementwise.cpp), but at p = 0.5 a channel of the head's
// BatchNorm1d keeps 1 or 2 of its 4 rows, where its input gradient is cancellation noise (zero in
// exact arithmetic with one row): measured, the second full-mode losses then differ by 4.7e-3
// relative and head.3's running mean by an nmse of 1.5e-6, beyond kTrainTolerance.
model::ModelConfig no_dropout() {
  model::ModelConfig c;
  c.dropout = 0.0f;
  return c;
}

// Eval-mode, no-grad scores of whatever is bound.
Tensor scores(SharedModel& shared, const Tensor& x) {
  model::ResNet18& net = shared.net();
  net.set_training(false);
  net.set_grad_enabled(false);
  Tensor y = net.forward(x.to(shared.device()));
  net.set_grad_enabled(true);
  return y;
}

double max_abs(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  double m = 0.0;
  for (int64_t i = 0; i < h.numel(); ++i) m = std::max(m, static_cast<double>(std::fabs(h.f32()[i])));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  REQUIRE(ha.shape() == hb.shape());
  double m = 0.0;
  for (int64_t i = 0; i < ha.numel(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(ha.f32()[i]) - static_cast<double>(hb.f32()[i])));
  return m;
}

// The tolerances of tests/gpu/test_cuda_model.cpp (the whole network on the device against the CPU:
// float32 through ~20 layers, summed in different orders): per element
// |a - b| <= of_max * max|ref| + rtol * |ref|, and an aggregate normalised error. Training mode is
// looser: batch statistics over 4 rows per channel (layer4's 1x1 maps, the head's BatchNorm1d)
// amplify rounding differences.
struct ModeTolerance {
  double of_max;
  double rtol;
  double max_nmse;
};
constexpr ModeTolerance kEvalTolerance{2e-4, 1e-3, 1e-8};
constexpr ModeTolerance kTrainTolerance{2e-3, 1e-3, 1e-6};

void require_close_in_mode(const Tensor& got, const Tensor& ref, const ModeTolerance& mode, const std::string& what) {
  REQUIRE(ref.defined());
  const double scale = std::max(max_abs(ref), 1e-30);
  test::require_cuda_close(got, ref, {mode.of_max * scale, mode.rtol, mode.max_nmse}, what);
}

// The learning rate of the two steps. Adam's first step is lr * g / (|g| + eps), i.e. lr * sign(g)
// on every parameter whatever |g|, and at the protocol's 1e-4 or 1e-3 that moves the batch-of-4
// network so far that the second forward amplifies rounding differences without bound (measured
// at 1e-4: second adapters-mode losses 0.603 on the CPU and 0.586 on the device, from first losses
// that agree to 1e-4): the comparison would measure chaos, not the device. At 1e-5 the second step
// starts from a model the first moved only slightly, and its loss must agree to the first's
// tolerance (kTrainTolerance on a scalar: 3e-3 relative).
constexpr float kLr = 1e-5f;
constexpr float kWeightDecay = 0.01f;

// Trained parameters are compared by their change from the generic value (value - generic, exact
// in double): the values themselves (BatchNorm gammas ~1) would hide a wrong update of 1e-5.
//   - Per element: anything two Adam steps can do, 4.1 * lr. With coupled weight decay every step
//     is lr * m^ / (sqrt(v^) + eps), |m^ / sqrt(v^)| <= 1.0013 for steps 1 and 2 (Cauchy-Schwarz on
//     the bias-corrected sums), so two steps on two devices differ by at most ~4.005 lr. Tighter
//     would be wrong: kTrainTolerance lets a gradient element differ by 2e-3 of its tensor's
//     largest, and an element that small (e.g. head.0.bias under the head's train-mode BatchNorm1d,
//     whose true gradient is zero when a channel's four pre-activations share a PReLU side) steps
//     +lr on one device and -lr on the other.
//   - Per mode, over all its trained parameters: nmse <= 1e-2, i.e. at most ~0.25% of the elements
//     (each at most (4 lr)^2 against ~(2 lr)^2 of change) may have stepped differently: the share
//     of gradient elements within kTrainTolerance's band around zero.
//   - Per entry: nmse <= 0.5, so no single tensor (a 64-element gamma) may have stepped
//     differently in most of its elements, which a wrong gradient kernel would do.
// Measured (adapters / head / full): per mode nmse 2.1e-4 / 1.1e-5 / 6.4e-5, worst entry 0.094
// (adapters' head.0.bias) / 1.4e-5 / 6.7e-3; second losses 3.2e-4 / 1.2e-5 / 1.7e-4 relative.
constexpr double kStepAtol = 4.1 * kLr;
constexpr double kModeNmse = 1e-2;
constexpr double kEntryNmse = 0.5;

// value - generic on the host (float - float is exact in double; rounded once to float).
Tensor change(const Tensor& value, const Tensor& generic) {
  const Tensor v = value.to(Device::cpu()), g = generic.to(Device::cpu());
  REQUIRE(v.shape() == g.shape());
  Tensor d = Tensor::zeros(v.shape());
  for (int64_t i = 0; i < v.numel(); ++i)
    d.f32()[i] = static_cast<float>(static_cast<double>(v.f32()[i]) - static_cast<double>(g.f32()[i]));
  return d;
}

const UserState::Entry& entry_named(const UserState& s, const std::string& name) {
  const auto it =
      std::find_if(s.entries.begin(), s.entries.end(), [&](const UserState::Entry& e) { return e.name == name; });
  REQUIRE_MESSAGE(it != s.entries.end(), "no entry " << name);
  return *it;
}

bool is_running_stat(const std::string& name) {
  return name.ends_with(".running_mean") || name.ends_with(".running_var") || name.ends_with(".num_batches_tracked");
}

std::string module_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

// Trains a fresh state of `mode` for two steps on (x, t); returns both losses.
std::vector<float> train_two_steps(SharedModel& shared, PersonaliseMode mode, const Tensor& x, const Tensor& t) {
  shared.bind_generic();
  shared.bind(shared.fresh_state(train::scope_of(mode), "carol"));
  train::configure_mode(shared.net(), mode);
  auto owned = train::make_optimizers(shared.net(), mode, kLr, kWeightDecay);
  std::vector<train::Optimizer*> opts;
  for (auto& o : owned) opts.push_back(o.get());
  train::TrainStep step(shared.net(), opts, shared.device());
  shared.net().set_training(true);
  std::vector<float> losses;
  for (int i = 0; i < 2; ++i) {
    const train::TrainStep::Outcome r = step.run(x, t);
    REQUIRE(r.finite);
    losses.push_back(r.loss);
  }
  shared.net().set_training(false);
  return losses;
}

}  // namespace

TEST_CASE("SharedModel on the device: binding is exact and the generic model scores as on the CPU") {
  AE_GPU_TEST_PRELUDE();
  const model::Checkpoint ck = test::generic_checkpoint();
  SharedModel cpu(ck, Device::cpu(), "generic (cpu)", no_dropout());
  SharedModel gpu(ck, device(), "generic (device)", no_dropout());
  REQUIRE(gpu.device().is_cuda());
  CHECK(gpu.digest() == cpu.digest());  // computed once, before the model moved
  const Tensor x = test::random_tensor({3, 32, 32, 3}, 11, -2.0f, 2.0f);

  const Tensor generic_cpu = scores(cpu, x);
  const Tensor generic_gpu = scores(gpu, x);
  require_close_in_mode(generic_gpu, generic_cpu, kEvalTolerance, "generic scores");

  auto a = test::random_user(gpu, 100, "alice");
  auto b = test::random_user(gpu, 200, "bob");
  for (const auto& e : a->entries)
    if (!e.is_counter) REQUIRE(e.value.device().is_cuda());
  gpu.bind(a);
  const Tensor a1 = scores(gpu, x);
  gpu.bind(b);
  const Tensor b1 = scores(gpu, x);
  gpu.bind(a);
  const Tensor a2 = scores(gpu, x);
  REQUIRE(a1.device().is_cuda());
  CHECK_FALSE(test::bitwise_equal(a1, b1));
  CHECK(test::bitwise_equal(a1, a2));
  gpu.bind_generic();
  CHECK(test::bitwise_equal(scores(gpu, x), generic_gpu));

  // The same person bound on the CPU scores the same.
  cpu.bind(test::random_user(cpu, 100, "alice"));
  const Tensor a_cpu = scores(cpu, x);
  require_close_in_mode(a1, a_cpu, kEvalTolerance, "alice's scores");
  std::printf("binding on the device: generic scores max |device - cpu| %.3g (max |cpu| %.3g), alice's %.3g\n",
              max_abs_diff(generic_gpu, generic_cpu), max_abs(generic_cpu), max_abs_diff(a1, a_cpu));

  // A host state does not bind to the device model, and the binding stays as it was.
  const UserState* bound = gpu.bound().get();
  test::require_error([&] { gpu.bind(test::random_user(cpu, 300, "carol")); }, {"cannot bind", "cuda"});
  CHECK(gpu.bound().get() == bound);
  require_guards_intact();
}

TEST_CASE("personalisation on the device matches the CPU in every mode; a device-trained user file scores the same on the CPU") {
  AE_GPU_TEST_PRELUDE();
  const model::Checkpoint ck = test::generic_checkpoint();
  SharedModel cpu(ck, Device::cpu(), "generic (cpu)", no_dropout());
  SharedModel gpu(ck, device(), "generic (device)", no_dropout());
  REQUIRE(gpu.device().is_cuda());
  const Tensor x = test::random_tensor({4, 32, 32, 3}, 3, -2.0f, 2.0f);
  const Tensor t = test::random_tensor({4, 1}, 4);
  // The generic state before any training: every entry, on the device and on the host.
  const auto generic_gpu = gpu.fresh_state(model::StateScope::all);
  const auto generic_cpu = cpu.fresh_state(model::StateScope::all);

  for (PersonaliseMode mode : {PersonaliseMode::adapters, PersonaliseMode::head, PersonaliseMode::full}) {
    const std::string m = train::mode_name(mode);
    INFO("mode " << m);
    const std::vector<float> loss_cpu = train_two_steps(cpu, mode, x, t);
    const std::vector<float> loss_gpu = train_two_steps(gpu, mode, x, t);
    double loss_rel = 0;
    for (int i = 0; i < 2; ++i) {
      INFO("loss of step " << i + 1 << ": cpu " << loss_cpu[i] << ", device " << loss_gpu[i]);
      const double ref = loss_cpu[i], err = std::fabs(static_cast<double>(loss_gpu[i]) - ref);
      CHECK(err <= (kTrainTolerance.of_max + kTrainTolerance.rtol) * std::fabs(ref));
      loss_rel = std::max(loss_rel, err / std::fabs(ref));
    }

    // What the mode writes: its trainable parameters, and the running statistics and counter of
    // every BatchNorm whose affine parameters it trains (the BatchNorms it runs in train mode).
    std::set<std::string> trainable;
    for (const model::ParamRef& r : gpu.net().trainable_parameters()) trainable.insert(r.name);
    const auto written = [&](const std::string& name) {
      return trainable.count(name) > 0 || (is_running_stat(name) && trainable.count(module_of(name) + ".weight") > 0);
    };

    const auto snap_cpu = cpu.snapshot();
    const auto snap_gpu = gpu.snapshot();
    REQUIRE(snap_gpu->entries.size() == snap_cpu->entries.size());
    int n_trained = 0, n_stats = 0, n_frozen = 0;
    double step_diff = 0, entry_nmse = 0, stat_rel = 0, err2 = 0, ref2 = 0;
    std::string worst_entry;
    for (std::size_t i = 0; i < snap_cpu->entries.size(); ++i) {
      const UserState::Entry& c = snap_cpu->entries[i];
      const UserState::Entry& g = snap_gpu->entries[i];
      REQUIRE(g.name == c.name);
      INFO("entry " << c.name);
      const UserState::Entry& gen_gpu = entry_named(*generic_gpu, c.name);
      const UserState::Entry& gen_cpu = entry_named(*generic_cpu, c.name);
      if (c.is_counter) {
        REQUIRE(g.is_counter);
        CHECK(g.counter == c.counter);
        CHECK(g.counter == gen_gpu.counter + (written(c.name) ? 2 : 0));
        continue;
      }
      REQUIRE(g.value.device().is_cuda());
      if (!written(c.name)) {  // frozen: nothing wrote it, on either device
        ++n_frozen;
        CHECK(test::bitwise_equal(g.value, gen_gpu.value));
        CHECK(test::bitwise_equal(c.value, gen_cpu.value));
        continue;
      }
      if (is_running_stat(c.name)) {  // as tests/gpu/test_cuda_model.cpp compares them after a step
        ++n_stats;
        require_close_in_mode(g.value, c.value, kTrainTolerance, m + " " + c.name);
        stat_rel = std::max(stat_rel, max_abs_diff(g.value, c.value) / std::max(max_abs(c.value), 1e-30));
        continue;
      }
      ++n_trained;
      const Tensor dc = change(c.value, gen_cpu.value), dg = change(g.value, gen_cpu.value);
      CHECK_MESSAGE(max_abs(dc) > 0, "the CPU did not train " << c.name);
      test::require_close(dg, dc, {kStepAtol, 0.0, kEntryNmse}, m + " change of " + c.name);
      const test::CompareResult r = test::compare(dg, dc, {kStepAtol, 0.0, kEntryNmse}, c.name);
      step_diff = std::max(step_diff, r.max_abs_err);
      if (r.nmse > entry_nmse) {
        entry_nmse = r.nmse;
        worst_entry = c.name;
      }
      for (int64_t k = 0; k < dc.numel(); ++k) {
        const double e = static_cast<double>(dg.f32()[k]) - dc.f32()[k];
        err2 += e * e;
        ref2 += static_cast<double>(dc.f32()[k]) * dc.f32()[k];
      }
    }
    CHECK(n_trained > 0);
    CHECK((n_frozen > 0) == (mode != PersonaliseMode::adapters));  // adapters trains its whole user state
    CHECK(n_stats > 0);  // every mode trains at least the head's BatchNorm1d
    const double mode_nmse = err2 / std::max(ref2, 1e-300);
    CHECK(mode_nmse <= kModeNmse);
    std::printf(
        "%s: %d trained parameters, %d running statistics, %d frozen; losses max rel diff %.3g; changes max |diff| "
        "%.3g (%.2f lr), nmse %.3g, worst entry nmse %.3g (%s); running stats max |diff| %.3g of max\n",
        m.c_str(), n_trained, n_stats, n_frozen, loss_rel, step_diff, step_diff / kLr, mode_nmse, entry_nmse,
        worst_entry.c_str(), stat_rel);

    if (mode == PersonaliseMode::adapters) {
      // A user file saved from the device-bound state holds the device's values exactly, loads on
      // the CPU SharedModel and scores there as on the device.
      test::TempDir dir;
      const std::string path = dir.file("carol.safetensors");
      gpu.save_bound_user_file(path, "carol");
      const Tensor xs = test::random_tensor({3, 32, 32, 3}, 21, -2.0f, 2.0f);
      const Tensor on_device = scores(gpu, xs);
      const auto loaded = cpu.load_user(path);
      for (const UserState::Entry& e : loaded->entries) {
        INFO("user file entry " << e.name);
        const UserState::Entry& g = entry_named(*snap_gpu, e.name);
        if (e.is_counter) {
          CHECK(e.counter == g.counter);
        } else {
          CHECK(e.value.device().is_cpu());
          CHECK(test::bitwise_equal(e.value, g.value));
        }
      }
      cpu.bind_generic();
      cpu.bind(loaded);
      const Tensor on_cpu = scores(cpu, xs);
      require_close_in_mode(on_device, on_cpu, kEvalTolerance, "scores of the device-trained user file");
      std::printf("adapters user file: scores max |device - cpu| %.3g (max |cpu| %.3g)\n",
                  max_abs_diff(on_device, on_cpu), max_abs(on_cpu));
    }

    // The generic state (the user-scope modes' frozen convolutions included) was not written.
    gpu.bind_generic();
    const auto after = gpu.snapshot();
    REQUIRE(after->entries.size() == generic_gpu->entries.size());
    for (std::size_t i = 0; i < after->entries.size(); ++i) {
      INFO("generic entry " << after->entries[i].name);
      if (after->entries[i].is_counter) {
        CHECK(after->entries[i].counter == generic_gpu->entries[i].counter);
      } else {
        CHECK(test::bitwise_equal(after->entries[i].value, generic_gpu->entries[i].value));
      }
    }
    require_guards_intact();
  }
}
