// ResNet-18 model: parameter counts, the state-dict contract (names, shapes, layouts), layout
// detection and refusals, checkpoints, freezing, gradients against finite differences, and
// train/eval behaviour. PyTorch parity lives in tests/parity/test_parity.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>


#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/resnet18.h"
#include "model/safetensors.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "weights_tools/model_file.h"

using namespace ae;
using namespace ae::model;
using ae::test::bitwise_equal;
using ae::test::error_of;
using ae::test::temp_path;

namespace {

ModelConfig config(HeadType head, bool adapters, uint64_t seed = 3, float dropout = 0.5f) {
  ModelConfig c;
  c.head = head;
  c.adapters = adapters;
  c.seed = seed;
  c.dropout = dropout;
  return c;
}

NamedTensors without(NamedTensors sd, const std::string& name) {
  std::erase_if(sd, [&](const auto& p) { return p.first == name; });
  return sd;
}

// (loss(value + eps) - loss(value - eps)) / 2eps, with `value` restored afterwards.
double central_difference(float& value, double eps, const std::function<double()>& loss) {
  const float saved = value;
  value = saved + static_cast<float>(eps);
  const double up = loss();
  value = saved - static_cast<float>(eps);
  const double down = loss();
  value = saved;
  return (up - down) / (2 * eps);
}

// Fills every adapter with small non-zero values so that adapter paths matter.
void randomise_adapters(ResNet18& m, uint64_t seed) {
  for (ParamRef& r : m.parameters()) {
    if (r.param->group != ParamGroup::adapters) continue;
    r.param->value.copy_from(test::random_tensor(r.param->value.shape(), seed++, -0.05f, 0.05f));
  }
}

}  // namespace

TEST_CASE("parameter counts match torchvision and the seed system") {
  ResNet18 seed(config(HeadType::seed, false));
  CHECK(seed.parameter_count(ParamGroup::backbone) + seed.parameter_count(ParamGroup::bn_affine) == 11689512);
  CHECK(seed.parameter_count(ParamGroup::bn_affine) == 9600);  // 4,800 BN channels, gamma and beta
  CHECK(seed.parameter_count(ParamGroup::head) == 323331);
  CHECK(seed.parameter_count(ParamGroup::adapters) == 0);

  ResNet18 adapted(config(HeadType::seed, true));
  // 16 bias-free 1x1 convs: the seed system's 1,224,448 minus its 3,840 adapter biases.
  CHECK(adapted.parameter_count(ParamGroup::adapters) == 1220608);

  ResNet18 linear(config(HeadType::linear, false));
  CHECK(linear.parameter_count(ParamGroup::backbone) + linear.parameter_count(ParamGroup::bn_affine) ==
        11689512 - 513000);
  CHECK(linear.parameter_count(ParamGroup::head) == 513);
}

TEST_CASE("state dict names, shapes and dtypes follow the layout contract for every configuration") {
  for (HeadType head : {HeadType::seed, HeadType::linear, HeadType::imagenet}) {
    for (bool adapters : {false, true}) {
      CAPTURE(head_name(head));
      CAPTURE(adapters);
      ResNet18 m(config(head, adapters));
      const NamedTensors sd = m.state_dict();
      const std::vector<LayoutEntry> layout = expected_layout(head, adapters);
      REQUIRE(sd.size() == layout.size());
      for (std::size_t i = 0; i < sd.size(); ++i) {
        CHECK(sd[i].first == layout[i].name);
        CHECK(shape_str(sd[i].second.shape()) == shape_str(layout[i].shape));
        CHECK(sd[i].second.dtype() == layout[i].dtype);
      }
      std::map<std::string, Shape> shapes;
      for (const auto& [n, t] : sd) shapes[n] = t.shape();
      CHECK(shapes.at("conv1.weight") == Shape{64, 3, 7, 7});  // OIHW in files
      CHECK(shapes.at("layer2.0.downsample.0.weight") == Shape{128, 64, 1, 1});
      CHECK(shapes.at("layer4.1.bn2.num_batches_tracked") == Shape{});
      CHECK(shapes.count("layer1.0.downsample.0.weight") == 0);
      CHECK(shapes.at("fc.weight") == (head == HeadType::linear ? Shape{1, 512} : Shape{1000, 512}));
      CHECK(shapes.count("head.1.weight") == (head == HeadType::seed ? 1u : 0u));
      if (head == HeadType::seed) {
        CHECK(shapes.at("head.0.weight") == Shape{256, 1000});
        CHECK(shapes.at("head.1.weight") == Shape{1});
        CHECK(shapes.at("head.7.running_var") == Shape{256});
        CHECK(shapes.at("head.8.weight") == Shape{1, 256});
      }
      CHECK(shapes.count("layer3.0.adapter1.weight") == (adapters ? 1u : 0u));
      if (adapters) {
        CHECK(shapes.at("layer3.0.adapter1.weight") == Shape{256, 128, 1, 1});
        CHECK(shapes.at("layer3.0.adapter2.weight") == Shape{256, 256, 1, 1});
        CHECK(shapes.at("layer1.1.adapter1.weight") == Shape{64, 64, 1, 1});
      }
    }
  }
}

TEST_CASE("conv weights are OHWI inside and OIHW in the state dict") {
  ResNet18 m(config(HeadType::linear, false));
  const Tensor inside = m.parameters()[0].param->value;  // conv1.weight [64,7,7,3]
  REQUIRE(inside.shape() == Shape{64, 7, 7, 3});
  const Tensor file = m.state_dict()[0].second;  // [64,3,7,7]
  const float* in = inside.f32();
  const float* f = file.f32();
  // Element (o=5, i=2, h=3, w=6).
  CHECK(f[((5 * 3 + 2) * 7 + 3) * 7 + 6] == in[((5 * 7 + 3) * 7 + 6) * 3 + 2]);
  CHECK(bitwise_equal(oihw_to_ohwi(file), inside));
}

TEST_CASE("layout detection recognises every configuration") {
  for (HeadType head : {HeadType::seed, HeadType::linear, HeadType::imagenet}) {
    for (bool adapters : {false, true}) {
      ResNet18 m(config(head, adapters));
      const DetectedLayout d = detect_layout(m.state_dict(), "test dict");
      CHECK(d.head == head);
      CHECK(d.adapters == adapters);
    }
  }
}

TEST_CASE("layouts that match nothing are refused with the offending names listed") {
  ResNet18 m(config(HeadType::seed, false));
  const NamedTensors good = m.state_dict();

  NamedTensors extra = good;
  extra.emplace_back("foo.weight", Tensor::zeros({3}));
  std::string e = error_of([&] { detect_layout(extra, "extra.pth"); });
  CHECK(e.find("extra.pth") != std::string::npos);
  CHECK(e.find("unexpected names (1): foo.weight") != std::string::npos);

  e = error_of([&] { detect_layout(without(good, "layer1.0.conv1.weight"), "missing.pth"); });
  CHECK(e.find("missing names (1): layer1.0.conv1.weight") != std::string::npos);

  NamedTensors bad_shape = good;
  for (auto& [n, t] : bad_shape)
    if (n == "layer2.0.bn1.weight") t = Tensor::zeros({64});
  e = error_of([&] { detect_layout(bad_shape, "shape.pth"); });
  CHECK(e.find("layer2.0.bn1.weight is [64] f32 cpu, expected [128] f32") != std::string::npos);

  // A DataParallel-style prefix is not silently accepted: every name is unexpected.
  NamedTensors prefixed;
  for (const auto& [n, t] : good) prefixed.emplace_back("module." + n, t);
  e = error_of([&] { detect_layout(prefixed, "prefixed.pth"); });
  CHECK(e.find("unexpected names") != std::string::npos);
  CHECK(e.find("module.conv1.weight") != std::string::npos);
  CHECK(e.find("missing names") != std::string::npos);

  // Half an adapter set: the missing adapters are named.
  ResNet18 a(config(HeadType::seed, true));
  e = error_of([&] { detect_layout(without(a.state_dict(), "layer4.1.adapter2.weight"), "half.pth"); });
  CHECK(e.find("missing names (1): layer4.1.adapter2.weight") != std::string::npos);

  // Old torchvision files have no num_batches_tracked: accepted.
  NamedTensors old_style;
  for (const auto& p : good)
    if (p.first.find("num_batches_tracked") == std::string::npos) old_style.push_back(p);
  CHECK(detect_layout(old_style, "old.pth").head == HeadType::seed);
}

TEST_CASE("load_state_dict: strict by default, optional parts only when asked") {
  ResNet18 generic(config(HeadType::seed, false, 11));
  ResNet18 adapted(config(HeadType::seed, true, 99));
  const NamedTensors sd = generic.state_dict();
  CHECK_THROWS_AS(adapted.load_state_dict(sd), ae::Error);
  LoadOptions opt;
  opt.allow_missing_adapters = true;
  adapted.load_state_dict(sd, opt);
  const NamedTensors back = adapted.state_dict();
  std::map<std::string, Tensor> by_name(back.begin(), back.end());
  for (const auto& [n, t] : sd) CHECK_MESSAGE(bitwise_equal(by_name.at(n), t), n);

  // A torchvision classifier (imagenet layout) into a seed model: head stays as initialised.
  ResNet18 imagenet(config(HeadType::imagenet, false, 5));
  ResNet18 seed(config(HeadType::seed, false, 6));
  const Tensor head_before = seed.state_dict().back().second.clone();
  CHECK_THROWS_AS(seed.load_state_dict(imagenet.state_dict()), ae::Error);
  LoadOptions head_opt;
  head_opt.allow_missing_head = true;
  seed.load_state_dict(imagenet.state_dict(), head_opt);
  CHECK(bitwise_equal(seed.state_dict().back().second, head_before));
  CHECK(bitwise_equal(seed.state_dict()[0].second, imagenet.state_dict()[0].second));
}

TEST_CASE("zero-initialised adapters give exactly the generic model's output") {
  ResNet18 generic(config(HeadType::seed, false, 21));
  ResNet18 adapted(config(HeadType::seed, true, 21));
  CHECK(adapted.parameter_count(ParamGroup::adapters) > 0);
  for (ParamRef& r : adapted.parameters()) {
    if (r.param->group != ParamGroup::adapters) continue;
    const std::vector<float> v = r.param->value.to_vector();
    CHECK_MESSAGE(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; }), r.name);
  }
  const Tensor x = test::random_tensor({2, 40, 36, 3}, 5);
  for (bool training : {false, true}) {
    generic.set_training(training);
    adapted.set_training(training);
    CHECK(bitwise_equal(generic.forward(x), adapted.forward(x)));
  }
  // And non-zero adapters change it.
  randomise_adapters(adapted, 77);
  generic.set_training(false);
  adapted.set_training(false);
  CHECK_FALSE(bitwise_equal(generic.forward(x), adapted.forward(x)));
}

TEST_CASE("checkpoint save -> load round trip is bit-exact, with the metadata contract") {
  ResNet18 m(config(HeadType::seed, true, 31));
  randomise_adapters(m, 5);
  m.set_training(true);
  m.forward(test::random_tensor({2, 48, 48, 3}, 8));  // non-trivial running stats and counters
  m.set_training(false);
  const std::string path = temp_path("roundtrip.safetensors");
  TargetNorm norm;
  norm.mean = 2.5;
  norm.std = 0.75;
  save_checkpoint(path, m, norm);
  CHECK(sniff_format(path) == FileFormat::safetensors);

  const Checkpoint c = read_checkpoint(path);
  CHECK(c.config.head == HeadType::seed);
  CHECK(c.config.adapters);
  CHECK(c.norm.mean == 2.5);
  CHECK(c.norm.std == 0.75);
  CHECK(c.metadata.at("format") == "aesthete");
  CHECK(c.metadata.at("format_version") == "1");
  CHECK(c.metadata.at("head") == "seed");
  CHECK(c.metadata.at("adapters") == "true");

  std::unique_ptr<ResNet18> loaded = make_model(c);
  const NamedTensors a = m.state_dict(), b = loaded->state_dict();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK_MESSAGE(bitwise_equal(a[i].second, b[i].second), a[i].first);
  }
  const Tensor x = test::random_tensor({1, 40, 40, 3}, 9);
  CHECK(bitwise_equal(m.forward(x), loaded->forward(x)));

  // Through the content-sniffing loader too.
  CHECK(weights::load_model_file(path).tensors.size() == a.size());

  // Defaults: the FLICKR-AES normalisation.
  save_checkpoint(path, m);
  CHECK(read_checkpoint(path).metadata.at("target_mean") == "3.0183403576");
  CHECK(read_checkpoint(path).metadata.at("target_std") == "1.1001719588");
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint metadata that contradicts the tensors is refused") {
  ResNet18 m(config(HeadType::linear, false, 1));
  const std::string path = temp_path("contradiction.safetensors");
  st::write_safetensors(path, m.state_dict(), {{"head", "seed"}});
  CHECK(error_of([&] { read_checkpoint(path); }).find("metadata says head 'seed'") != std::string::npos);
  st::write_safetensors(path, m.state_dict(), {{"adapters", "true"}});
  CHECK(error_of([&] { read_checkpoint(path); }).find("metadata says adapters true") != std::string::npos);
  st::write_safetensors(path, m.state_dict(), {{"format", "aesthete"}, {"format_version", "9"}});
  CHECK(error_of([&] { read_checkpoint(path); }).find("format_version '9'") != std::string::npos);
  // No metadata at all (e.g. Python's safetensors library): layout from the names.
  st::write_safetensors(path, m.state_dict(), {});
  CHECK(read_checkpoint(path).config.head == HeadType::linear);
  std::filesystem::remove(path);

  const std::string junk = temp_path("junk.bin");
  std::FILE* f = std::fopen(junk.c_str(), "wb");
  std::fputs("definitely not a model", f);
  std::fclose(f);
  CHECK(sniff_format(junk) == FileFormat::unknown);
  CHECK_THROWS_AS(read_checkpoint(junk), ae::Error);
  CHECK_THROWS_AS(weights::load_model_file(junk), ae::Error);
  std::filesystem::remove(junk);
}

TEST_CASE("frozen groups get no gradients, and backward stops where nothing needs one") {
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 12);
  const Tensor target = test::random_tensor({2, 1}, 13);

  // Reference: everything trainable.
  ResNet18 full(config(HeadType::seed, true, 41, 0.0f));
  randomise_adapters(full, 3);
  full.set_training(true);
  Tensor out = full.forward(x);
  CHECK_FALSE(full.backward(ops::mse_loss_backward(out, target)).defined());  // no input grad unless asked
  for (ParamRef& r : full.parameters()) CHECK_MESSAGE(r.param->grad.defined(), r.name);
  std::map<std::string, Tensor> full_grads;
  for (ParamRef& r : full.parameters()) full_grads[r.name] = r.param->grad;

  // Head only (the seed system's "last layers" mode).
  ResNet18 head_only(config(HeadType::seed, true, 41, 0.0f));
  randomise_adapters(head_only, 3);
  head_only.set_training(true);
  for (ParamGroup g : {ParamGroup::backbone, ParamGroup::bn_affine, ParamGroup::adapters}) head_only.set_trainable(g, false);
  CHECK_FALSE(head_only.trainable(ParamGroup::backbone));
  CHECK(head_only.trainable(ParamGroup::head));
  out = head_only.forward(x);
  head_only.backward(ops::mse_loss_backward(out, target));
  int with_grad = 0;
  for (ParamRef& r : head_only.parameters()) {
    const bool is_head = r.param->group == ParamGroup::head;
    CHECK_MESSAGE(r.param->grad.defined() == is_head, r.name);
    if (is_head) {
      ++with_grad;
      CHECK_MESSAGE(bitwise_equal(r.param->grad, full_grads.at(r.name)), r.name);
    }
  }
  CHECK(with_grad == 12);
  CHECK(head_only.trainable_parameters().size() == 12u);

  // Adapter mode: adapters + BN affine + head; 3x3/7x7/downsample convs and fc frozen.
  ResNet18 adapt(config(HeadType::seed, true, 41, 0.0f));
  randomise_adapters(adapt, 3);
  adapt.set_training(true);
  adapt.set_trainable(ParamGroup::backbone, false);
  out = adapt.forward(x);
  const Tensor dx = adapt.backward(ops::mse_loss_backward(out, target), /*need_input_grad=*/true);
  CHECK(dx.shape() == x.shape());
  for (ParamRef& r : adapt.parameters()) {
    CHECK_MESSAGE(r.param->grad.defined() == (r.param->group != ParamGroup::backbone), r.name);
    if (r.param->grad.defined()) {
      AE_REQUIRE_OK(test::compare(r.param->grad, full_grads.at(r.name), test::Tolerance{1e-6, 1e-5, 1e-10}, r.name));
    }
  }

  // zero_grad clears everything; a second backward needs a new forward.
  adapt.zero_grad();
  for (ParamRef& r : adapt.parameters()) CHECK_FALSE(r.param->grad.defined());
  CHECK_THROWS_AS(adapt.backward(ops::mse_loss_backward(out, target)), ae::Error);
}

TEST_CASE("gradients accumulate until zero_grad") {
  ResNet18 m(config(HeadType::linear, false, 2));
  m.set_training(false);
  const Tensor x = test::random_tensor({1, 32, 32, 3}, 4);
  const Tensor dy = Tensor::full({1, 1}, 1.0f);
  m.forward(x);
  m.backward(dy);
  const Tensor once = m.parameters().back().param->grad.clone();
  m.forward(x);
  m.backward(dy);
  AE_REQUIRE_OK(test::compare(m.parameters().back().param->grad, ops::scale(once, 2.0f), test::Tolerance{}, "2x"));
}

TEST_CASE("input gradient of the whole network matches central finite differences (eval mode)") {
  ResNet18 m(config(HeadType::seed, true, 51));
  randomise_adapters(m, 17);
  m.set_training(false);
  Tensor x = test::random_tensor({1, 32, 32, 3}, 21);
  const Tensor w = test::random_tensor({1, 1}, 22);

  const Tensor out = m.forward(x);
  const Tensor dx = m.backward(w, /*need_input_grad=*/true);
  REQUIRE(dx.shape() == x.shape());

  m.set_grad_enabled(false);
  auto loss = [&]() { return test::weighted_sum(m.forward(x), w); };
  const std::vector<float> g = dx.to_vector();
  double gmax = 0;
  for (float v : g) gmax = std::max(gmax, static_cast<double>(std::fabs(v)));
  REQUIRE(gmax > 0);
  // A few elements spread over the image and the channels, in double-sided differences.
  float* px = x.f32();
  const int64_t picks[] = {0, 97, 1000, 1535, 2049, 3071};
  for (int64_t i : picks) {
    const double numeric = central_difference(px[i], 2e-3, loss);
    CAPTURE(i);
    CAPTURE(numeric);
    CAPTURE(g[i]);
    CHECK(std::fabs(numeric - g[i]) <= 2e-3 + 2e-2 * std::fabs(numeric) + 1e-2 * gmax);
  }
  m.set_grad_enabled(true);
}

TEST_CASE("parameter gradients in train mode match finite differences") {
  // Train-mode BatchNorm couples the batch: differences through the batch statistics. Batch 4 at
  // 64x64 keeps every BatchNorm away from the degenerate two-values-per-channel case (layer4 is 2x2).
  ResNet18 m(config(HeadType::seed, true, 61, 0.0f));
  randomise_adapters(m, 29);
  m.set_training(true);
  const Tensor x = test::random_tensor({4, 64, 64, 3}, 31);
  const Tensor target = test::random_tensor({4, 1}, 32);
  Tensor out = m.forward(x);
  m.backward(ops::mse_loss_backward(out, target));

  auto loss = [&]() {
    m.set_grad_enabled(false);
    const double l = ops::mse_loss_forward(m.forward(x), target).item();
    m.set_grad_enabled(true);
    return l;
  };
  std::map<std::string, Param*> by_name;
  for (ParamRef& r : m.parameters()) by_name[r.name] = r.param;
  // In each tensor the element with the largest gradient, so the difference quotient is far
  // above the float32 noise of the loss.
  const char* picks[] = {"layer3.1.adapter2.weight", "layer2.0.bn1.weight", "head.3.bias",
                         "head.1.weight",            "layer4.0.conv1.weight", "fc.bias"};
  for (const char* name : picks) {
    Param* p = by_name.at(name);
    const std::vector<float> grad = p->grad.to_vector();
    const auto i = static_cast<std::size_t>(
        std::max_element(grad.begin(), grad.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); }) -
        grad.begin());
    float* v = p->value.f32();
    const double numeric = central_difference(v[i], 1e-3, loss);
    const double analytic = grad[i];
    INFO(std::string(name) << ": numeric " << numeric << " analytic " << analytic);
    CHECK(std::fabs(numeric - analytic) <= 2e-4 + 3e-2 * std::fabs(numeric));
  }
}

TEST_CASE("train and eval modes: batch statistics, running-stat updates, dropout streams") {
  ResNet18 m(config(HeadType::seed, false, 71, 0.5f));
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 41);
  auto bn1_state = [&]() {
    for (const auto& [n, t] : m.state_dict())
      if (n == "bn1.running_mean") return t;
    return Tensor();
  };
  auto counter = [&](const std::string& name) {
    for (const auto& [n, t] : m.state_dict())
      if (n == name) return *t.data<int64_t>();
    return int64_t{-1};
  };

  m.set_training(false);
  const Tensor e1 = m.forward(x);
  const Tensor e2 = m.forward(x);
  CHECK(bitwise_equal(e1, e2));
  CHECK(counter("layer1.0.bn1.num_batches_tracked") == 0);
  const Tensor stats_before = bn1_state();

  m.set_training(true);
  const uint64_t step = m.dropout_step();
  const Tensor t1 = m.forward(x);
  CHECK(m.dropout_step() == step + 1);
  CHECK(counter("layer1.0.bn1.num_batches_tracked") == 1);
  CHECK(counter("head.7.num_batches_tracked") == 1);
  CHECK_FALSE(bitwise_equal(bn1_state(), stats_before));
  CHECK_FALSE(bitwise_equal(t1, e1));
  const Tensor t2 = m.forward(x);
  CHECK(counter("bn1.num_batches_tracked") == 2);
  CHECK_FALSE(bitwise_equal(t1, t2));  // new dropout masks (and updated running stats do not matter here)

  // Replaying the dropout step reproduces the masks exactly (batch stats do not depend on running stats).
  m.set_dropout_step(step);
  CHECK(bitwise_equal(m.forward(x), t1));

  // Eval output is unaffected by dropout and by the step counter.
  m.set_training(false);
  const Tensor e3 = m.forward(x);
  m.set_dropout_step(12345);
  CHECK(bitwise_equal(m.forward(x), e3));

  // Train-mode BatchNorm1d in the head cannot work on one sample: a clear error, as in PyTorch.
  m.set_training(true);
  CHECK_THROWS_AS(m.forward(test::random_tensor({1, 32, 32, 3}, 3)), ae::Error);
}

TEST_CASE("bad inputs are clear errors") {
  ResNet18 m(config(HeadType::linear, false));
  CHECK(error_of([&] { m.forward(Tensor::zeros({1, 3, 32, 32})); }).find("NHWC [N,H,W,3]") != std::string::npos);
  CHECK(error_of([&] { m.backward(Tensor::zeros({1, 1})); }).find("no activations kept") != std::string::npos);
  m.set_grad_enabled(false);
  m.forward(Tensor::zeros({1, 32, 32, 3}));
  CHECK_THROWS_AS(m.backward(Tensor::zeros({1, 1})), ae::Error);
  CHECK_THROWS_AS(parse_head("mlp"), ae::Error);
}
