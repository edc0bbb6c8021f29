// aesthete bench: throughput of the whole training step, inference, and the data loader, on
// the chosen device. bench/torch_peer.py runs the same work in PyTorch, and bench/compare.sh
// runs both in one go so the result is a ratio measured side by side.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "apps/commands.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"
#include "model/inference_graph.h"
#include "model/model_graph.h"
#include "model/resnet18.h"
#include "runtime/philox.h"
#include "runtime/thread_pool.h"
#include "train/image.h"
#include "train/loader.h"
#include "train/optimizer.h"
#include "train/personalise.h"
#include "train/train_loop.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct BenchArgs {
  std::string what = "all";
  std::string device = "auto";
  int64_t batch = 16;
  int size = 224;
  int steps = 5;
  int workers = 0;  // 0 = hardware threads
  std::string precision = "f32";
  std::string mode = "all";  // --what personalise: all, adapters, head or full
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Tensor random_input(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = 2.0f * philox::uniform(seed, static_cast<uint64_t>(i)) - 1.0f;
  return t;
}

// Seconds per call of `step` over `steps` calls, after `warmups` untimed calls (allocator caches,
// first-touch pages; a TrainStep on CUDA runs its first batch eagerly and captures at its second).
template <typename F>
double seconds_per(int steps, F&& step, int warmups = 1) {
  for (int i = 0; i < warmups; ++i) step();
  const auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  return seconds_since(t0) / steps;
}

// One Adam training step (forward, MSE, backward, update) of the seed-head model, as trained, through
// the trainer's own step (train/train_loop.h), and/or eval-mode inference. Run alone (--what train or
// inference), a process's peak memory is that workload's (bench/cpu_suite.sh).
void bench_model(const BenchArgs& a, Device device, bool train, bool infer) {
  model::ModelConfig cfg;
  model::ResNet18 net(cfg);
  net.to(device);
  const Tensor x = random_input({a.batch, a.size, a.size, 3}, 1).to(device);
  const double imgs = static_cast<double>(a.batch);
  const double gflop_fwd = 3.63 * (a.size / 224.0) * (a.size / 224.0);  // ResNet-18 at 224: 1.81 GMAC
  // What every line below measured (the activation storage: the global --activations).
  char setup_buf[160];
  std::snprintf(setup_buf, sizeof setup_buf, "device=%s batch=%lld size=%d precision=%s activations=%s",
                device.str().c_str(), static_cast<long long>(a.batch), a.size, a.precision.c_str(),
                dtype_name(net.activation_dtype()));
  const char* setup = setup_buf;
  if (train) {
    train::Optimizer opt(net.trainable_parameters(), {});
    train::TrainStep step(net, {&opt}, device);
    const Tensor target = random_input({a.batch, 1}, 2).to(device);
    net.set_training(true);
    // As the trainer runs it: on a CUDA device, replays of the captured step (TrainStep::set_graphs).
    const double train_s = seconds_per(a.steps, [&] { step.run(x, target); }, 2);
    std::printf("train-step  %s  %.2f images/s  (%.1f GFLOP/s at 3x forward%s)\n", setup, imgs / train_s,
                3 * gflop_fwd * imgs / train_s, step.graph_replays() > 0 ? "; CUDA graph replays" : "");
    if (step.graph_replays() > 0) {  // the same step without graphs, for the graphs' share
      train::TrainStep eager(net, {&opt}, device);
      eager.set_graphs(false);
      const double eager_s = seconds_per(a.steps, [&] { eager.run(x, target); });
      std::printf("train-step-eager %s  %.2f images/s  (graph replays %.2fx eager)\n", setup, imgs / eager_s,
                  eager_s / train_s);
    }
  }
  if (infer) {
    net.set_training(false);
    net.set_grad_enabled(false);
    const double infer_s = seconds_per(a.steps, [&] { net.forward(x).to_vector(); });
    std::printf("inference   %s  %.2f images/s  (%.1f GFLOP/s)\n", setup, imgs / infer_s, gflop_fwd * imgs / infer_s);
    if (device.is_cuda()) {  // the same forward captured once and replayed (model/inference_graph.h)
      model::InferenceGraph graph(net);
      const double graph_s = seconds_per(a.steps, [&] { graph.forward(x).to_vector(); });
      std::printf("inference-graph %s  %.2f images/s  (%.2fx eager; %zu graph nodes)\n", setup, imgs / graph_s,
                  infer_s / graph_s, graph.graph() != nullptr ? graph.graph()->node_count() : std::size_t{0});
    }
  }
}

// The personalisation step of each mode against a full training step on the same batch and model
// (an adapter model: the full step trains everything but the adapters, as `--mode full` does).
void bench_personalise(const BenchArgs& a, Device device) {
  model::ModelConfig cfg;
  cfg.adapters = true;
  model::ResNet18 net(cfg);
  net.to(device);
  const Tensor x = random_input({a.batch, a.size, a.size, 3}, 1).to(device);
  const Tensor target = random_input({a.batch, 1}, 2).to(device);
  double full_s = 0;
  std::vector<train::PersonaliseMode> modes = {train::PersonaliseMode::full, train::PersonaliseMode::adapters,
                                               train::PersonaliseMode::head};
  if (a.mode != "all") modes = {train::parse_mode(a.mode)};
  for (train::PersonaliseMode mode : modes) {
    train::configure_mode(net, mode);
    auto owned = train::make_optimizers(net, mode, 1e-4f, mode == train::PersonaliseMode::adapters ? 0.01f : 0.0f);
    std::vector<train::Optimizer*> opts;
    for (auto& o : owned) opts.push_back(o.get());
    train::TrainStep step(net, opts, device);
    net.set_training(true);
    const double s = seconds_per(a.steps, [&] { step.run(x, target); }, 2);  // as personalisation runs it
    if (mode == train::PersonaliseMode::full) full_s = s;
    int64_t trainable = 0;
    for (const auto& r : net.trainable_parameters()) trainable += r.param->value.numel();
    std::printf("personalise-step mode=%-8s device=%s batch=%lld size=%d  %.1f ms/step  %.2f images/s", train::mode_name(mode),
                device.str().c_str(), static_cast<long long>(a.batch), a.size, 1e3 * s, static_cast<double>(a.batch) / s);
    if (full_s > 0) std::printf("  %.2fx the full step", s / full_s);
    std::printf("  (%lld trainable parameters)\n", static_cast<long long>(trainable));
  }
}

// One enhancement step: eval forward + input gradient, weights frozen (the input-gradient pass that
// enhance and saliency run), batch and size as given (the workload: 512 x 512, batch 1).
void bench_enhance(const BenchArgs& a, Device device) {
  model::ModelConfig cfg;
  model::ResNet18 net(cfg);
  net.to(device);
  net.set_training(false);
  const Tensor x = random_input({a.batch, a.size, a.size, 3}, 1).to(device);
  const double s = seconds_per(a.steps, [&] { net.input_gradient(x).dx.to_vector(); });
  std::printf("enhance-step device=%s batch=%lld size=%d  %.2f images/s  (%.1f ms/step)\n", device.str().c_str(),
              static_cast<long long>(a.batch), a.size, static_cast<double>(a.batch) / s, 1e3 * s);
  if (device.is_cuda()) {  // the same pass captured once and replayed, as enhance and saliency run it
    model::ModelGraph graph(net, "input-gradient pass", [&net](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{net.input_gradient(in[0], in[1]).dx};
    });
    const Tensor seed = Tensor::full({a.batch, 1}, 1.0f).to(device);
    const double graph_s = seconds_per(a.steps, [&] { graph.run({x, seed})[0].to_vector(); });
    std::printf("enhance-step-graph device=%s batch=%lld size=%d  %.2f images/s  (%.1f ms/step; %.2fx eager)\n",
                device.str().c_str(), static_cast<long long>(a.batch), a.size, static_cast<double>(a.batch) / graph_s,
                1e3 * graph_s, s / graph_s);
  }
}

// Decode + augment throughput of the loader on FLICKR-AES-sized JPEGs (500x375).
void bench_loader(const BenchArgs& a) {
  const fs::path dir = fs::temp_directory_path() / ("aesthete_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<data::Sample> samples;
  const int n_files = 16;
  for (int i = 0; i < n_files; ++i) {
    img::Image im;
    im.width = 500;
    im.height = 375;
    im.rgb.resize(500 * 375 * 3);
    for (std::size_t k = 0; k < im.rgb.size(); ++k)
      im.rgb[k] = static_cast<uint8_t>((k * 7 + (k / 1500) * 13 + static_cast<std::size_t>(i) * 31) % 251);
    const std::string p = (dir / ("p" + std::to_string(i) + ".jpg")).string();
    img::write_jpeg(p, im, 90);
    samples.push_back({p, 0.0f});
  }
  std::vector<data::Sample> many;
  for (int r = 0; r < 8; ++r) many.insert(many.end(), samples.begin(), samples.end());
  const int hw = a.workers > 0 ? a.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int workers : {1, hw}) {
    data::LoaderConfig c;
    c.batch = 16;
    c.workers = workers;
    c.transform.size = a.size;
    c.transform.resize_to = a.size * 256 / 224;
    data::Loader loader(many, c);
    loader.start_epoch(0);
    const auto t0 = Clock::now();
    int64_t n = 0;
    while (auto b = loader.next()) n += b->images.dim(0);
    const double s = seconds_since(t0);
    std::printf("loader      workers=%d  %.1f images/s  (%.1f images/s per worker; 500x375 JPEG -> %d px train transform)\n",
                workers, static_cast<double>(n) / s, static_cast<double>(n) / s / workers, a.size);
    if (workers == hw) break;
  }
  fs::remove_all(dir);
}

void run_bench(const BenchArgs& a) {
  const std::vector<std::string> kinds = {"all", "model", "train", "inference", "personalise", "enhance", "loader"};
  AE_CHECK(std::find(kinds.begin(), kinds.end(), a.what) != kinds.end(),
           "--what must be all, model, train, inference, personalise, enhance or loader, got '" << a.what << "'");
  AE_CHECK(a.mode == "all" || a.what == "personalise", "--mode is for --what personalise");
  if (a.mode != "all") (void)train::parse_mode(a.mode);  // refused before any work
  const bool no_training = a.what == "enhance" || a.what == "inference";  // training BatchNorm needs 2 images
  AE_CHECK(a.batch >= (no_training ? 1 : 2) && a.size >= 32 && a.steps >= 1,
           "bench: need --batch >= 2 (1 for enhance and inference), --size >= 32, --steps >= 1");
  apply_conv_math(a.precision, "--precision");
  if (a.what != "loader") {
    const Device device = resolve_device(a.device);
    AE_CHECK(device.is_cuda() || a.precision == "f32",
             "--precision " << a.precision << ": the CPU backend computes in f32 only");
    if (device.is_cpu())  // which GEMM kernels and threads the numbers below come from
      std::printf("cpu         threads=%d  GEMM: %s\n", thread_count(), cpu::blas_info().c_str());
    if (a.what == "personalise")
      bench_personalise(a, device);
    else if (a.what == "enhance")
      bench_enhance(a, device);
    else
      bench_model(a, device, a.what != "inference", a.what != "train");
  }
  if (a.what == "all" || a.what == "loader") bench_loader(a);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure training-step, inference and loader throughput");
  cmd->add_option("--what", a->what,
                  "all (model and loader), model (train and inference), train, inference, personalise, enhance or loader")
      ->capture_default_str();
  cmd->add_option("--mode", a->mode, "--what personalise: all, adapters, head or full")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--batch", a->batch)->capture_default_str();
  cmd->add_option("--size", a->size)->capture_default_str();
  cmd->add_option("--steps", a->steps, "Timed steps after the warm-up steps")->capture_default_str();
  cmd->add_option("--precision", a->precision, "CUDA convolution arithmetic: f32, tf32 or bf16 (as --conv-math)")
      ->capture_default_str();
  cmd->add_option("--workers", a->workers, "Loader threads for the second loader run (0 = all cores)")
      ->capture_default_str();
  cmd->callback([a] { run_bench(*a); });
}

}  // namespace ae::app
