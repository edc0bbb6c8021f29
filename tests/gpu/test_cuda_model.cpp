// The whole ResNet-18 on the CUDA backend against the same model on the CPU backend: the seed
// head without and with residual adapters, forward and backward in training mode (dropout p = 0 so
// the two devices see the same network) and in eval mode, on a batch of four 32x32 images (32 px is
// the smallest input for which the stem and the four stages still leave a 1x1 map). Compared: the
// output, the loss, every parameter gradient, the input gradient and the BatchNorm running
// statistics after a training step; and a repeated CUDA training step must give the same bits.
// Every device buffer has red zones.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "model/resnet18.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;
using ae::model::ParamGroup;
using ae::model::ResNet18;

namespace {

ae::model::ModelConfig config(bool adapters) {
  ae::model::ModelConfig c;
  c.head = ae::model::HeadType::seed;
  c.adapters = adapters;
  c.dropout = 0.0f;
  c.seed = 5;
  return c;
}

// Adapters start at zero; give them small random weights (the same on both models) so that the
// adapter path changes the activations and its gradients are not trivially related to others.
void randomise_adapters(ResNet18& m) {
  uint64_t seed = 900;
  for (const ae::model::ParamRef& r : m.parameters()) {
    if (r.param->group != ParamGroup::adapters) continue;
    r.param->value = test::random_tensor(r.param->value.shape(), seed++, -0.05f, 0.05f);
  }
}

struct StepResult {
  Tensor out, loss, dx;
  ae::model::NamedTensors grads, state;
};

StepResult step(ResNet18& m, const Tensor& x, const Tensor& target, bool training) {
  m.set_training(training);
  m.zero_grad();
  StepResult r;
  const Tensor out = m.forward(x);
  const Tensor loss = ops::mse_loss_forward(out, target);
  const Tensor dx = m.backward(ops::mse_loss_backward(out, target), /*need_input_grad=*/true);
  r.out = out.to(Device::cpu());
  r.loss = loss.to(Device::cpu());
  r.dx = dx.to(Device::cpu());
  r.grads = m.grads_pytorch_layout();
  r.state = m.state_dict();
  return r;
}

// A second training step from the same weights on the same batch gives the same bits (batch
// statistics do not depend on the running ones, and dropout is off): every reduction is
// deterministic (DESIGN.md, "Determinism is a test").
void require_repeatable(const StepResult& again, const StepResult& first) {
  CHECK(test::bitwise_equal(again.out, first.out));
  CHECK(test::bitwise_equal(again.loss, first.loss));
  CHECK(test::bitwise_equal(again.dx, first.dx));
  REQUIRE(again.grads.size() == first.grads.size());
  for (std::size_t i = 0; i < first.grads.size(); ++i) {
    INFO("grad " << first.grads[i].first);
    CHECK(test::bitwise_equal(again.grads[i].second, first.grads[i].second));
  }
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  const float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, static_cast<double>(std::fabs(p[i])));
  return m;
}

// Float32 through ~20 layers, summed in different orders on the two devices. Elements are
// compared against a fraction of the tensor's largest magnitude (individual gradient elements can
// be near zero, where a purely relative bound means nothing), and the tensor as a whole must agree
// to a normalised error. Training mode is looser: batch statistics over only 4 rows per channel
// (layer4's 1x1 maps, the head's BatchNorm1d) amplify rounding differences on the way back (with 2
// rows the head's BN input gradient is pure cancellation noise, which is why the batch is 4).
struct ModeTolerance {
  double of_max;  // per element: |a - b| <= of_max * max|ref| + rtol * |ref|
  double rtol;
  double max_nmse;
};
constexpr ModeTolerance kEvalTolerance{2e-4, 1e-3, 1e-8};
constexpr ModeTolerance kTrainTolerance{2e-3, 1e-3, 1e-6};

// The mode's tolerance scaled to ref's largest magnitude, then the shared comparison. A tensor of
// one element (a PReLU slope's gradient: one sum over every activation of the batch, mostly
// cancelling) has no scale apart from itself, so its normalised error is just its relative error,
// which rounding in the summands bounds only relative to their size, not the sum's: it is held to
// the per-element bound alone, |a - b| <= (of_max + rtol) * |ref|.
void require_close_in_mode(const Tensor& got, const Tensor& ref, const ModeTolerance& mode, const std::string& what) {
  REQUIRE(ref.defined());
  const double scale = std::max(max_abs(ref.to(Device::cpu())), 1e-30);
  const double max_nmse = ref.numel() == 1 ? 1.0 : mode.max_nmse;
  test::require_close(got, ref, {mode.of_max * scale, mode.rtol, max_nmse}, what);
}

void require_same_step(const StepResult& gpu, const StepResult& cpu, const ModeTolerance& tol,
                       const std::string& what) {
  require_close_in_mode(gpu.out, cpu.out, tol, what + " output");
  require_close_in_mode(gpu.loss, cpu.loss, tol, what + " loss");
  require_close_in_mode(gpu.dx, cpu.dx, tol, what + " input gradient");
  REQUIRE(gpu.grads.size() == cpu.grads.size());
  REQUIRE(!cpu.grads.empty());
  for (std::size_t i = 0; i < cpu.grads.size(); ++i) {
    REQUIRE(gpu.grads[i].first == cpu.grads[i].first);
    require_close_in_mode(gpu.grads[i].second, cpu.grads[i].second, tol, what + " grad " + cpu.grads[i].first);
  }
  REQUIRE(gpu.state.size() == cpu.state.size());
  for (std::size_t i = 0; i < cpu.state.size(); ++i) {
    REQUIRE(gpu.state[i].first == cpu.state[i].first);
    const std::string& name = cpu.state[i].first;
    if (name.find("running_") == std::string::npos) continue;  // parameters are unchanged by a step
    require_close_in_mode(gpu.state[i].second, cpu.state[i].second, tol, what + " " + name);
  }
}

void check_model(bool adapters, bool check_repeatable) {
  ResNet18 cpu_model(config(adapters));
  ResNet18 gpu_model(config(adapters));
  if (adapters) {
    randomise_adapters(cpu_model);
    randomise_adapters(gpu_model);
  }
  gpu_model.to(device());
  REQUIRE(gpu_model.device().is_cuda());

  const Tensor x = test::random_tensor({4, 32, 32, 3}, 41, -2.0f, 2.0f);
  const Tensor target = test::random_tensor({4, 1}, 42);
  const Tensor xd = to_device(x), td = to_device(target);
  const std::string name = adapters ? "seed head + adapters" : "seed head";

  const StepResult train_cpu = step(cpu_model, x, target, true);
  const StepResult train_gpu = step(gpu_model, xd, td, true);
  // Every trainable parameter has a gradient, adapters included.
  CHECK(train_cpu.grads.size() == cpu_model.trainable_parameters().size());
  require_same_step(train_gpu, train_cpu, kTrainTolerance, name + " train");
  require_guards_intact();

  // Eval mode uses the running statistics the training step just updated (compared above).
  const StepResult eval_cpu = step(cpu_model, x, target, false);
  const StepResult eval_gpu = step(gpu_model, xd, td, false);
  require_same_step(eval_gpu, eval_cpu, kEvalTolerance, name + " eval");
  // Last, since it updates the running statistics once more.
  if (check_repeatable) require_repeatable(step(gpu_model, xd, td, true), train_gpu);
  require_guards_intact();
}

// The CPU reference of this file is the im2col path, the tolerances above were set against it:
// the CPU's Winograd paths carry their own, larger rounding (bounded against the double reference
// in unit/test_winograd), and a whole network compounds two roundings, not one.
void use_exact_cpu_reference() { cpu::set_conv_algo(cpu::ConvAlgo::im2col); }

}  // namespace

TEST_CASE("ResNet-18 with the seed head: CUDA backend matches the CPU backend, train and eval") {
  AE_GPU_TEST_PRELUDE();
  use_exact_cpu_reference();
  check_model(false, /*check_repeatable=*/true);
}

TEST_CASE("ResNet-18 with the seed head and adapters: CUDA backend matches the CPU backend, train and eval") {
  AE_GPU_TEST_PRELUDE();
  use_exact_cpu_reference();
  check_model(true, /*check_repeatable=*/false);
}
