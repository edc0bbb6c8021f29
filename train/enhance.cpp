#include "train/enhance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/ops.h"
#include "kernels/resize_taps.h"
#include "model/model_graph.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "train/preprocess.h"

namespace ae::train {

using json = nlohmann::json;

EnhanceMode parse_enhance_mode(const std::string& text) {
  if (text == "global") return EnhanceMode::global;
  if (text == "pixels") return EnhanceMode::pixels;
  AE_FAIL("--mode must be global or pixels, got '" << text << "'");
}

const char* enhance_mode_name(EnhanceMode m) { return m == EnhanceMode::global ? "global" : "pixels"; }

// ---------------------------------------------------------------- recipes

namespace {

constexpr int kTheta = 5 + kToneKnots;
constexpr const char* kRecipeFormat = "aesthete-edit-recipe";
const char* const kFieldNames[5] = {"exposure_stops", "contrast", "saturation", "temperature", "tint"};

ops::PhotoEditParams edit_params() {
  ops::PhotoEditParams p;
  p.tone_knots = kToneKnots;
  return p;
}

}  // namespace

std::vector<float> EditRecipe::theta() const {
  std::vector<float> t = {static_cast<float>(exposure), static_cast<float>(contrast), static_cast<float>(saturation),
                          static_cast<float>(temperature), static_cast<float>(tint)};
  for (int i = 0; i < kToneKnots; ++i) t.push_back(i < static_cast<int>(tone.size()) ? static_cast<float>(tone[static_cast<std::size_t>(i)]) : 0.0f);
  return t;
}

EditRecipe EditRecipe::from_theta(const std::vector<float>& t, double eps) {
  AE_CHECK(t.size() == static_cast<std::size_t>(kTheta), "edit recipe: " << t.size() << " parameters, expected " << kTheta);
  EditRecipe r;
  r.exposure = t[0];
  r.contrast = t[1];
  r.saturation = t[2];
  r.temperature = t[3];
  r.tint = t[4];
  r.tone.assign(t.begin() + 5, t.end());
  r.epsilon = eps;
  return r;
}

std::string EditRecipe::to_json(const std::vector<std::pair<std::string, double>>& extra) const {
  json j;
  j["format"] = kRecipeFormat;
  j["version"] = 1;
  const std::vector<float> t = theta();
  for (int i = 0; i < 5; ++i) j[kFieldNames[i]] = t[static_cast<std::size_t>(i)];
  j["tone_curve"] = std::vector<double>(t.begin() + 5, t.end());
  j["epsilon"] = epsilon;
  j["meaning"] =
      "exposure_stops: brightness x 2^v; contrast: (v - 0.5) x e^c around mid-grey; saturation: chroma x e^s; "
      "temperature: red x e^t, blue x e^-t; tint: green x e^g; tone_curve: monotone curve through knots at "
      "1/5..4/5 moved by tanh(z)/10 (kernels/ops.h photo_edit_forward)";
  for (const auto& [k, v] : extra) j[k] = v;
  return j.dump(2) + "\n";
}

EditRecipe EditRecipe::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    AE_FAIL("'" << origin << "' is not valid JSON: " << e.what());
  }
  AE_CHECK(j.is_object() && j.contains("format") && j["format"].is_string() &&
               j["format"].get_ref<const std::string&>() == kRecipeFormat,
           "'" << origin << "' is not an aesthete edit recipe (no \"format\": \"" << kRecipeFormat << "\")");
  AE_CHECK(j.contains("version") && j["version"].is_number_integer() && j["version"].get<int64_t>() == 1,
           "'" << origin << "': recipe version is not 1");
  // Every number must be finite and within float range (it becomes a float parameter; the bounds
  // below are far inside it).
  auto number = [&](const json& v, const std::string& what) {
    AE_CHECK(v.is_number() && std::isfinite(v.get<double>()) && std::abs(v.get<double>()) <= 1e30,
             "'" << origin << "': " << what << " must be a finite number of magnitude at most 1e30");
    return v.get<double>();
  };
  AE_CHECK(j.contains("epsilon"), "'" << origin << "': no \"epsilon\"");
  const double eps = number(j["epsilon"], "epsilon");
  AE_CHECK(eps > 0 && eps <= 10, "'" << origin << "': epsilon " << eps << " is outside (0, 10]");
  std::vector<float> t;
  for (int i = 0; i < 5; ++i) {
    AE_CHECK(j.contains(kFieldNames[i]), "'" << origin << "': no \"" << kFieldNames[i] << "\"");
    t.push_back(static_cast<float>(number(j[kFieldNames[i]], kFieldNames[i])));
  }
  AE_CHECK(j.contains("tone_curve") && j["tone_curve"].is_array() && j["tone_curve"].size() == kToneKnots,
           "'" << origin << "': \"tone_curve\" must be an array of " << kToneKnots << " numbers");
  for (const auto& v : j["tone_curve"]) t.push_back(static_cast<float>(number(v, "tone_curve entry")));
  for (int i = 0; i < kTheta; ++i) {
    const double b = eps * kRecipeBounds[i] * (1 + 1e-6);
    AE_CHECK(std::abs(t[static_cast<std::size_t>(i)]) <= b,
             "'" << origin << "': " << (i < 5 ? kFieldNames[i] : "tone_curve entry") << " = " << t[static_cast<std::size_t>(i)]
                 << " is outside +-" << eps * kRecipeBounds[i] << " (epsilon " << eps << ")");
  }
  return from_theta(t, eps);
}

// ---------------------------------------------------------------- helpers

namespace {

// The photo at working resolution as [1,h,w,3] f32 in [0,1] on `device`.
Tensor working_image(const img::Image& photo, int max_side, Device device) {
  img::check_image(photo, "enhance");
  AE_CHECK(max_side >= 16, "--max-side must be at least 16, got " << max_side);
  const int long_side = std::max(photo.width, photo.height);
  img::ImageF f;
  if (long_side > max_side) {
    const double s = static_cast<double>(max_side) / long_side;
    const int w = std::max(1, static_cast<int>(std::lround(photo.width * s)));
    const int h = std::max(1, static_cast<int>(std::lround(photo.height * s)));
    f = img::resize_bilinear_antialias(photo, h, w);
  } else {
    f = img::to_float(photo);
  }
  const Tensor t = img::to_tensor(f);
  return t.reshape({1, t.dim(0), t.dim(1), 3}).to(device);
}

struct Eval {
  double score = 0;
  Tensor grad;  // d score / d image01, image01's shape and device
};

// ones [n,1] on `device`: the score's gradient seed, passed to a graphed function as an input (a
// host-to-device copy inside it would be refused by the capture).
Tensor score_seed(int64_t n, Device device) { return Tensor::full({n, 1}, 1.0f).to(device); }

// {score [N,1], d score / d image01}: the eval preprocessing, the input-gradient pass and the
// preprocessing's backward, device ops only, so that model::GraphedFunction can capture it.
std::vector<Tensor> score_and_grad_ops(model::ResNet18& net, const Tensor& image01, const Tensor& seed, int size) {
  const Tensor input = img::preprocess_eval_ops(image01, size);
  const model::ResNet18::InputGradient ig = net.input_gradient(input, seed);
  return {ig.score, img::preprocess_eval_ops_backward(ig.dx, image01.shape(), size)};
}

Eval to_eval(const std::vector<Tensor>& out) { return {static_cast<double>(out[0].item()), out[1]}; }

// One eager pass (the pixel mode's --eot crops, each of its own shape).
Eval score_and_grad(model::SharedModel& shared, const Tensor& image01, int size) {
  return to_eval(score_and_grad_ops(shared.net(), image01, score_seed(image01.dim(0), shared.device()), size));
}

struct Proposal {
  std::vector<float> theta;
  bool moved = false;
};

// Each parameter moves by at most eta * bound_i, in the direction of bound-scaled ascent.
Proposal propose_theta(const std::vector<float>& theta, const std::vector<float>& grad, double eps, double eta) {
  double m = 0;
  for (int i = 0; i < kTheta; ++i) m = std::max(m, std::abs(kRecipeBounds[i] * grad[static_cast<std::size_t>(i)]));
  Proposal p{theta, false};
  if (!(m > 0) || !std::isfinite(m)) return p;
  for (int i = 0; i < kTheta; ++i) {
    const double b = eps * kRecipeBounds[i];
    const double step = eta * b * kRecipeBounds[i] * grad[static_cast<std::size_t>(i)] / m;
    const float v = static_cast<float>(std::clamp(theta[static_cast<std::size_t>(i)] + step, -b, b));
    p.moved |= v != theta[static_cast<std::size_t>(i)];
    p.theta[static_cast<std::size_t>(i)] = v;
  }
  return p;
}

EnhanceResult enhance_global(model::SharedModel& shared, const img::Image& photo, const EnhanceOptions& o, double eps) {
  const Device device = shared.device();
  const Tensor work = working_image(photo, o.max_side, device);
  const Tensor seed = score_seed(1, device);
  const ops::PhotoEditParams pe = edit_params();
  model::ResNet18& net = shared.net();
  // (work, theta, seed) -> {score, d score / d theta}: every step has the same shapes, so from the
  // second step on a CUDA device replays one graph.
  model::GraphedFunction score_and_dtheta(net, o.cuda_graphs, "the enhancement step", [&](const std::vector<Tensor>& in) {
    const Tensor edited = ops::photo_edit_forward(pe, in[0], in[1]);
    const std::vector<Tensor> sg = score_and_grad_ops(net, edited, in[2], o.size);
    return std::vector<Tensor>{sg[0], ops::photo_edit_backward_theta(pe, in[0], in[1], sg[1])};
  });
  auto evaluate = [&](const std::vector<float>& th, std::vector<float>& dtheta) {
    const std::vector<Tensor> out = score_and_dtheta({work, Tensor::from_vector({kTheta}, th), seed});
    dtheta = out[1].to_vector();
    return static_cast<double>(out[0].item());
  };
  EnhanceResult r;
  std::vector<float> theta(kTheta, 0.0f), grad;
  double score = evaluate(theta, grad);
  r.scores.push_back(score);
  double eta = 0.5;
  for (int step = 0; step < o.steps; ++step) {
    throw_if_stopped(o.stop, "enhance");
    const Proposal p = propose_theta(theta, grad, eps, eta);
    if (!p.moved) break;  // at the bounds in the ascent direction, or a zero gradient
    std::vector<float> g2;
    const double s2 = evaluate(p.theta, g2);
    if (s2 > score) {
      theta = p.theta;
      grad = std::move(g2);
      score = s2;
      r.scores.push_back(score);
      ++r.accepted;
      eta = std::min(1.0, eta * 1.5);
    } else {
      ++r.rejected;
      eta *= 0.5;
    }
  }
  r.recipe = EditRecipe::from_theta(theta, eps);
  r.image = apply_recipe(photo, r.recipe);
  r.graph_replays = score_and_dtheta.graph_replays();
  return r;
}

// Host copies of [1,h,w,3] tensors, for the pixel mode's projections and crops.
std::vector<float> host(const Tensor& t) { return t.to_vector(); }
Tensor device_tensor(const std::vector<float>& v, const Shape& shape, Device device) {
  return Tensor::from_vector(shape, v).to(device);
}

// Gradient of the score averaged over `n` random crops (85-100% of each side) and flips of `image`
// (expectation over transformations); n = 1 is the plain gradient.
std::vector<float> eot_gradient(model::SharedModel& shared, const std::vector<float>& image, int h, int w, int n, int size,
                                uint64_t seed, uint64_t step, const Eval& plain) {
  if (n <= 1) return host(plain.grad);
  std::vector<double> acc(image.size(), 0.0);
  const uint64_t key = seed * 0x9E3779B97F4A7C15ull + step * 7919 + 1;
  for (int t = 0; t < n; ++t) {
    auto u = [&](int k) { return philox::uniform(key, static_cast<uint64_t>(t * 8 + k)); };
    const int ch = std::max(1, static_cast<int>(std::lround(h * (0.85 + 0.15 * u(0)))));
    const int cw = std::max(1, static_cast<int>(std::lround(w * (0.85 + 0.15 * u(1)))));
    const int y0 = std::min(h - ch, static_cast<int>(u(2) * (h - ch + 1)));
    const int x0 = std::min(w - cw, static_cast<int>(u(3) * (w - cw + 1)));
    const bool flip = u(4) < 0.5f;
    std::vector<float> crop(static_cast<std::size_t>(ch) * cw * 3);
    auto src_index = [&](int y, int x, int c) {
      const int sx = flip ? x0 + cw - 1 - x : x0 + x;
      return (static_cast<std::size_t>(y0 + y) * w + sx) * 3 + c;
    };
    for (int y = 0; y < ch; ++y)
      for (int x = 0; x < cw; ++x)
        for (int c = 0; c < 3; ++c) crop[(static_cast<std::size_t>(y) * cw + x) * 3 + c] = image[src_index(y, x, c)];
    const Eval e = score_and_grad(shared, device_tensor(crop, {1, ch, cw, 3}, shared.device()), size);
    const std::vector<float> g = host(e.grad);
    for (int y = 0; y < ch; ++y)
      for (int x = 0; x < cw; ++x)
        for (int c = 0; c < 3; ++c) acc[src_index(y, x, c)] += g[(static_cast<std::size_t>(y) * cw + x) * 3 + c];
  }
  std::vector<float> out(acc.size());
  for (std::size_t i = 0; i < acc.size(); ++i) out[i] = static_cast<float>(acc[i] / n);
  return out;
}

// full = clamp(photo + upsample(delta)) in row strips: the upsampled change never exists whole.
img::Image add_upsampled(const img::Image& photo, const std::vector<float>& delta, int h, int w) {
  const ops::BilinearAxis rows = ops::bilinear_axis(h, photo.height);
  const ops::BilinearAxis cols = ops::bilinear_axis(w, photo.width);
  img::Image out = photo;
  std::vector<float> row0(static_cast<std::size_t>(photo.width) * 3), row1(row0.size());
  auto upsample_row = [&](int src_y, std::vector<float>& dst) {
    for (int x = 0; x < photo.width; ++x) {
      const ops::BilinearTap& t = cols.taps[static_cast<std::size_t>(x)];
      for (int c = 0; c < 3; ++c)
        dst[static_cast<std::size_t>(x) * 3 + c] = t.w0 * delta[(static_cast<std::size_t>(src_y) * w + t.i0) * 3 + c] +
                                                    t.w1 * delta[(static_cast<std::size_t>(src_y) * w + t.i1) * 3 + c];
    }
  };
  for (int y = 0; y < photo.height; ++y) {
    const ops::BilinearTap& t = rows.taps[static_cast<std::size_t>(y)];
    upsample_row(t.i0, row0);
    upsample_row(t.i1, row1);
    for (int x = 0; x < photo.width * 3; ++x) {
      const std::size_t i = static_cast<std::size_t>(y) * photo.width * 3 + x;
      const float d = t.w0 * row0[static_cast<std::size_t>(x)] + t.w1 * row1[static_cast<std::size_t>(x)];
      const float v = std::clamp(photo.rgb[i] / 255.0f + d, 0.0f, 1.0f);
      out.rgb[i] = static_cast<uint8_t>(std::lround(v * 255.0f));
    }
  }
  return out;
}

EnhanceResult enhance_pixels(model::SharedModel& shared, const img::Image& photo, const EnhanceOptions& o, double eps) {
  AE_CHECK(eps > 0 && eps <= 1, "--epsilon for --mode pixels is the largest change of a pixel channel in [0,1] units "
                                "(8/255 = 0.031 is the default), got "
                                    << eps);
  AE_CHECK(o.eot >= 1 && o.eot <= 64, "--eot must be in 1..64, got " << o.eot);
  const Device device = shared.device();
  const Tensor work_t = working_image(photo, o.max_side, device);
  const int h = static_cast<int>(work_t.dim(1)), w = static_cast<int>(work_t.dim(2));
  const Shape shape = work_t.shape();
  const std::vector<float> work = host(work_t);
  const Tensor seed = score_seed(1, device);
  model::ResNet18& net = shared.net();
  // The plain gradient of every step has the working image's shape: from the second on a CUDA
  // device it replays one graph. (The --eot crops run eagerly: each has a shape of its own.)
  model::GraphedFunction pass(net, o.cuda_graphs, "the enhancement step", [&](const std::vector<Tensor>& in) {
    return score_and_grad_ops(net, in[0], in[1], o.size);
  });
  auto plain = [&](const std::vector<float>& x) { return to_eval(pass({Tensor::from_vector(shape, x), seed})); };
  std::vector<float> delta(work.size(), 0.0f);
  auto current = [&](const std::vector<float>& d) {
    std::vector<float> x(work.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = work[i] + d[i];
    return x;
  };
  EnhanceResult r;
  Eval e = plain(current(delta));
  std::vector<float> grad = eot_gradient(shared, current(delta), h, w, o.eot, o.size, o.seed, 0, e);
  r.scores.push_back(e.score);
  double alpha = eps / 2;
  for (int step = 0; step < o.steps; ++step) {
    throw_if_stopped(o.stop, "enhance");
    // Projected signed ascent: L-infinity ball of radius eps, and the image stays in [0,1].
    std::vector<float> d2 = delta;
    bool moved = false;
    for (std::size_t i = 0; i < d2.size(); ++i) {
      const float s = grad[i] > 0 ? 1.0f : (grad[i] < 0 ? -1.0f : 0.0f);
      float v = std::clamp(delta[i] + static_cast<float>(alpha) * s, static_cast<float>(-eps), static_cast<float>(eps));
      v = std::clamp(v, -work[i], 1.0f - work[i]);
      moved |= v != delta[i];
      d2[i] = v;
    }
    if (!moved) break;
    const Eval e2 = plain(current(d2));
    if (e2.score > e.score) {
      delta = std::move(d2);
      e = e2;
      grad = eot_gradient(shared, current(delta), h, w, o.eot, o.size, o.seed, static_cast<uint64_t>(step) + 1, e);
      r.scores.push_back(e.score);
      ++r.accepted;
    } else {
      ++r.rejected;
      alpha /= 2;
    }
  }
  for (float d : delta) r.max_change = std::max(r.max_change, static_cast<double>(std::abs(d)));
  r.image = add_upsampled(photo, delta, h, w);
  r.graph_replays = pass.graph_replays();
  return r;
}

}  // namespace

// ---------------------------------------------------------------- API

EnhanceResult enhance(model::SharedModel& shared, const img::Image& photo, const EnhanceOptions& o) {
  AE_CHECK(o.steps >= 0 && o.steps <= 1000, "--steps must be in 0..1000, got " << o.steps);
  AE_CHECK(o.size >= 32 && o.size <= 4096, "network input size must be in 32..4096, got " << o.size);
  model::ResNet18& net = shared.net();
  net.set_training(false);
  if (o.mode == EnhanceMode::global) {
    const double eps = o.epsilon < 0 ? 0.4 : o.epsilon;
    AE_CHECK(eps > 0 && eps <= 10, "--epsilon for --mode global scales the edit bounds (0.4 is the default; 1 allows "
                                   "+-1 stop of exposure), got "
                                       << eps);
    return enhance_global(shared, photo, o, eps);
  }
  return enhance_pixels(shared, photo, o, o.epsilon < 0 ? 8.0 / 255.0 : o.epsilon);
}

img::Image apply_recipe(const img::Image& photo, const EditRecipe& recipe) {
  img::check_image(photo, "apply_recipe");
  const ops::PhotoEditParams pe = edit_params();
  const Tensor theta = Tensor::from_vector({kTheta}, recipe.theta());
  img::Image out;
  out.width = photo.width;
  out.height = photo.height;
  out.rgb.resize(photo.rgb.size());
  constexpr int kStripRows = 128;  // a strip of a 24-megapixel photo: ~1.5 MB in, ~9 MB of floats out
  for (int y0 = 0; y0 < photo.height; y0 += kStripRows) {
    const int rows = std::min(kStripRows, photo.height - y0);
    const std::size_t begin = static_cast<std::size_t>(y0) * photo.width * 3;
    Tensor strip = Tensor::empty({1, rows, photo.width, 3}, DType::u8);
    std::copy_n(photo.rgb.data() + begin, strip.numel(), strip.data<uint8_t>());
    const Tensor y = ops::photo_edit_forward(pe, strip, theta);
    const float* p = y.f32();
    for (int64_t i = 0; i < y.numel(); ++i)
      out.rgb[begin + static_cast<std::size_t>(i)] = static_cast<uint8_t>(std::lround(std::clamp(p[i], 0.0f, 1.0f) * 255.0f));
  }
  return out;
}

double score_photo(model::SharedModel& shared, const img::Image& photo, int size) {
  model::ResNet18& net = shared.net();
  net.set_training(false);
  const bool grad = net.grad_enabled();
  net.set_grad_enabled(false);
  const double z = net.forward(img::preprocess_eval(photo, size).to(shared.device())).item();
  net.set_grad_enabled(grad);
  return z;
}

}  // namespace ae::train
