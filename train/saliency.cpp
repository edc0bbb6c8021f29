// Saliency maps: vanilla gradient, SmoothGrad, versus-generic; the overlay and the raw 16-bit map.
#include "train/saliency.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "model/model_graph.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/philox.h"
#include "train/preprocess.h"

namespace ae::train {

namespace {

constexpr double kPi = 3.14159265358979323846;

// A standard normal number, element `index` of the stream `seed` (Box-Muller on two Philox
// uniforms; 1 - u is in (0, 1], so the log is finite).
double gaussian(uint64_t seed, uint64_t index) {
  const double u1 = philox::uniform(seed, 2 * index);
  const double u2 = philox::uniform(seed, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * kPi * u2);
}

// Positive part, then the max over the 3 channels of an HWC gradient.
std::vector<float> positive_channel_max(const std::vector<float>& g, int64_t pixels) {
  std::vector<float> out(static_cast<std::size_t>(pixels));
  for (int64_t p = 0; p < pixels; ++p) {
    float m = 0.0f;  // clamp(min = 0) first, so the max is >= 0
    for (int c = 0; c < 3; ++c) m = std::max(m, g[static_cast<std::size_t>(p * 3 + c)]);
    out[static_cast<std::size_t>(p)] = m;
  }
  return out;
}

struct Inputs {
  Tensor clean;         // [1,S,S,3] normalised: preprocess_eval(photo, S)
  img::ImageF image01;  // the squash-resized [0,1] image, for the noisy copies
  double sigma = 0;     // noise in [0,1] units
};

// The input gradient of the bound state, averaged over the SmoothGrad copies (or the clean
// input's for vanilla), HWC floats; and the clean score.
std::vector<float> mean_gradient(model::SharedModel& shared, const Inputs& in, const SaliencyOptions& o, double& score,
                                 int64_t& graph_replays) {
  model::ResNet18& net = shared.net();
  // (x, ones [N,1]) -> {score, dx}. The seed is an input: a host-to-device copy inside the function
  // would be refused by a capture.
  model::GraphedFunction pass(net, o.cuda_graphs, "the saliency pass", [&net](const std::vector<Tensor>& args) {
    const model::ResNet18::InputGradient ig = net.input_gradient(args[0], args[1]);
    return std::vector<Tensor>{ig.score, ig.dx};
  });
  auto seed = [](int64_t n) { return Tensor::full({n, 1}, 1.0f); };
  const std::vector<Tensor> clean = pass({in.clean, seed(1)});
  score = clean[0].to_vector().at(0);
  if (o.smoothgrad <= 0) {
    graph_replays += pass.graph_replays();
    return clean[1].to_vector();
  }

  const int S = in.image01.height;
  const int64_t count = int64_t{S} * S * 3;
  std::vector<double> sum(static_cast<std::size_t>(count), 0.0);
  const int batch = std::max(1, o.batch);
  for (int k0 = 0; k0 < o.smoothgrad; k0 += batch) {
    throw_if_stopped(o.stop, "saliency");
    const int n = std::min(batch, o.smoothgrad - k0);
    Tensor x = Tensor::empty({n, S, S, 3});
    for (int b = 0; b < n; ++b) {
      if (in.sigma > 0) {
        img::ImageF noisy = in.image01;
        const uint64_t base = static_cast<uint64_t>(k0 + b) * static_cast<uint64_t>(count);
        for (int64_t e = 0; e < count; ++e) {
          float& v = noisy.rgb[static_cast<std::size_t>(e)];
          const double moved = v + in.sigma * gaussian(o.seed, base + static_cast<uint64_t>(e));
          v = static_cast<float>(std::clamp(moved, 0.0, 1.0));  // clipped, never wrapped
        }
        x.rows(b, b + 1).copy_from(img::normalize_imagenet(noisy));
      } else {
        x.rows(b, b + 1).copy_from(in.clean);
      }
    }
    const std::vector<float> dx = pass({x, seed(n)})[1].to_vector();
    for (int b = 0; b < n; ++b)
      for (int64_t e = 0; e < count; ++e) sum[static_cast<std::size_t>(e)] += dx[static_cast<std::size_t>(b * count + e)];
    AE_DEBUG("saliency: SmoothGrad " << k0 + n << "/" << o.smoothgrad);
  }
  graph_replays += pass.graph_replays();
  std::vector<float> mean(static_cast<std::size_t>(count));
  for (int64_t e = 0; e < count; ++e)
    mean[static_cast<std::size_t>(e)] = static_cast<float>(sum[static_cast<std::size_t>(e)] / o.smoothgrad);
  return mean;
}

// Piecewise-linear colour maps on 8-bit sRGB stops.
struct Rgb {
  float r, g, b;
};

Rgb from_hex(uint32_t hex) {
  return Rgb{static_cast<float>((hex >> 16) & 0xFF) / 255.0f, static_cast<float>((hex >> 8) & 0xFF) / 255.0f,
             static_cast<float>(hex & 0xFF) / 255.0f};
}

template <std::size_t N>
Rgb lookup(const uint32_t (&stops)[N], float t) {  // t in [0,1]
  const float pos = std::clamp(t, 0.0f, 1.0f) * static_cast<float>(N - 1);
  const std::size_t i = std::min(static_cast<std::size_t>(pos), N - 2);
  const float w = pos - static_cast<float>(i);
  const Rgb a = from_hex(stops[i]), b = from_hex(stops[i + 1]);
  return Rgb{a.r + w * (b.r - a.r), a.g + w * (b.g - a.g), a.b + w * (b.b - a.b)};
}

// matplotlib's viridis at 10 evenly spaced points (perceptually uniform, sequential).
constexpr uint32_t kViridis[] = {0x440154, 0x482878, 0x3E4A89, 0x31688E, 0x26828E,
                                 0x1F9E89, 0x35B779, 0x6DCD59, 0xB4DE2C, 0xFDE725};
// ColorBrewer RdBu (11 classes), reversed: -1 dark blue, 0 near white, +1 dark red.
constexpr uint32_t kBlueWhiteRed[] = {0x053061, 0x2166AC, 0x4393C3, 0x92C5DE, 0xD1E5F0, 0xF7F7F7,
                                      0xFDDBC7, 0xF4A582, 0xD6604D, 0xB2182B, 0x67001F};

// The |value| below which `q` of the map lies (q in (0,1]).
float quantile_abs(const std::vector<float>& map, double q) {
  if (map.empty()) return 0.0f;
  std::vector<float> a(map.size());
  for (std::size_t i = 0; i < map.size(); ++i) a[i] = std::fabs(map[i]);
  const std::size_t k = std::min(a.size() - 1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(a.size()))) - 1);
  std::nth_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(k), a.end());
  return a[k];
}

std::string format_g(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

float SaliencyResult::max_abs() const {
  float m = 0.0f;
  for (float v : map) m = std::max(m, std::fabs(v));
  return m;
}

SaliencyResult compute_saliency(model::SharedModel& shared, const img::Image& photo, const SaliencyOptions& o) {
  img::check_image(photo, "compute_saliency");
  AE_CHECK(shared.head() != model::HeadType::imagenet,
           shared.name() << " is an ImageNet classifier (no aesthetics score): it has no score to explain");
  AE_CHECK(o.size > 0 && o.size <= 4096, "saliency: the input side must be in 1..4096, got " << o.size);
  AE_CHECK(o.smoothgrad >= 0, "saliency: --smoothgrad must be >= 0, got " << o.smoothgrad);
  AE_CHECK(std::isfinite(o.noise) && o.noise >= 0, "saliency: --noise must be a number >= 0, got " << o.noise);

  Inputs in;
  in.clean = img::preprocess_eval(photo, o.size);  // the input `aesthete score` scores, bit for bit
  if (o.smoothgrad > 0) {
    in.image01 = img::resize_bilinear(photo, o.size, o.size);
    const auto [lo, hi] = std::minmax_element(in.image01.rgb.begin(), in.image01.rgb.end());
    in.sigma = o.noise * (static_cast<double>(*hi) - static_cast<double>(*lo));
  }

  SaliencyResult r;
  r.size = o.size;
  r.noise_sigma = in.sigma;
  const int64_t pixels = int64_t{o.size} * o.size;
  r.map = positive_channel_max(mean_gradient(shared, in, o, r.score, r.graph_replays), pixels);
  if (!o.versus_generic) return r;

  // The generic model's map on the same input and noise copies, then the caller's binding again.
  const std::shared_ptr<model::UserState> bound = shared.bound();
  std::vector<float> generic;
  try {
    shared.bind_generic();
    generic = positive_channel_max(mean_gradient(shared, in, o, r.generic_score, r.graph_replays), pixels);
  } catch (...) {
    if (bound != nullptr) shared.bind(bound);
    throw;
  }
  if (bound != nullptr) shared.bind(bound);
  r.is_signed = true;
  for (std::size_t i = 0; i < r.map.size(); ++i) r.map[i] -= generic[i];
  return r;
}

std::vector<float> upsample_map(const std::vector<float>& map, int map_h, int map_w, int out_h, int out_w) {
  AE_CHECK(map_h > 0 && map_w > 0 && out_h > 0 && out_w > 0 &&
               map.size() == static_cast<std::size_t>(map_h) * static_cast<std::size_t>(map_w),
           "upsample_map: " << map.size() << " values for " << map_h << "x" << map_w << " -> " << out_h << "x" << out_w);
  // Taps of one axis: source = (o + 0.5) * in / out - 0.5, clamped below at 0; neighbours clamped.
  struct Tap {
    int i0, i1;
    float w1;
  };
  auto taps = [](int in, int out) {
    std::vector<Tap> t(static_cast<std::size_t>(out));
    const double scale = static_cast<double>(in) / out;
    for (int o = 0; o < out; ++o) {
      const double src = std::max(0.0, (o + 0.5) * scale - 0.5);
      const int i0 = std::min(static_cast<int>(src), in - 1);
      t[static_cast<std::size_t>(o)] = Tap{i0, std::min(i0 + 1, in - 1), static_cast<float>(src - i0)};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(map_h, out_h), tx = taps(map_w, out_w);
  std::vector<float> out(static_cast<std::size_t>(out_h) * static_cast<std::size_t>(out_w));
  for (int y = 0; y < out_h; ++y) {
    const Tap& a = ty[static_cast<std::size_t>(y)];
    const float* r0 = map.data() + static_cast<std::size_t>(a.i0) * map_w;
    const float* r1 = map.data() + static_cast<std::size_t>(a.i1) * map_w;
    float* dst = out.data() + static_cast<std::size_t>(y) * out_w;
    for (int x = 0; x < out_w; ++x) {
      const Tap& b = tx[static_cast<std::size_t>(x)];
      const float top = r0[b.i0] + b.w1 * (r0[b.i1] - r0[b.i0]);
      const float bottom = r1[b.i0] + b.w1 * (r1[b.i1] - r1[b.i0]);
      dst[x] = top + a.w1 * (bottom - top);
    }
  }
  return out;
}

img::Image saliency_overlay(const img::Image& photo, const SaliencyResult& r) {
  img::check_image(photo, "saliency_overlay");
  const std::vector<float> up = upsample_map(r.map, r.size, r.size, photo.height, photo.width);
  float vis = quantile_abs(r.map, 0.995);
  if (!(vis > 0)) vis = r.max_abs();
  const float inv = vis > 0 ? 1.0f / vis : 0.0f;
  img::Image out;
  out.width = photo.width;
  out.height = photo.height;
  out.rgb.resize(photo.rgb.size());
  const std::size_t pixels = static_cast<std::size_t>(photo.width) * static_cast<std::size_t>(photo.height);
  for (std::size_t p = 0; p < pixels; ++p) {
    const float c[3] = {photo.rgb[p * 3] / 255.0f, photo.rgb[p * 3 + 1] / 255.0f, photo.rgb[p * 3 + 2] / 255.0f};
    const float luma = 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2];
    Rgb colour;
    float alpha;
    if (r.is_signed) {
      const float t = std::clamp(up[p] * inv, -1.0f, 1.0f);
      colour = lookup(kBlueWhiteRed, 0.5f * (t + 1.0f));
      alpha = 0.85f * std::fabs(t);
    } else {
      const float t = std::clamp(up[p] * inv, 0.0f, 1.0f);
      colour = lookup(kViridis, t);
      alpha = 0.2f + 0.65f * t;
    }
    const float m[3] = {colour.r, colour.g, colour.b};
    for (int k = 0; k < 3; ++k) {
      const float dim = 0.55f * (0.3f * c[k] + 0.7f * luma);  // dimmed, mostly grey: the colours read
      const float v = dim + alpha * (m[k] - dim);
      out.rgb[p * 3 + static_cast<std::size_t>(k)] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
    }
  }
  return out;
}

img::Gray16Image saliency_raw_png(const SaliencyResult& r) {
  AE_CHECK(r.size > 0 && r.map.size() == static_cast<std::size_t>(r.size) * static_cast<std::size_t>(r.size),
           "saliency_raw_png: " << r.map.size() << " values for a " << r.size << "x" << r.size << " map");
  const double scale = r.max_abs();
  const int zero = r.is_signed ? 32768 : 0;
  const double full = 65535.0 - zero;
  img::Gray16Image im;
  im.width = im.height = r.size;
  im.values.resize(r.map.size());
  for (std::size_t i = 0; i < r.map.size(); ++i) {
    const double q = scale > 0 ? zero + std::nearbyint(r.map[i] / scale * full) : zero;
    im.values[i] = static_cast<uint16_t>(std::clamp(q, 0.0, 65535.0));
  }
  im.text = {{kSaliencyScaleKey, format_g(scale)},
             {kSaliencyZeroKey, std::to_string(zero)},
             {"aesthete:kind", r.is_signed ? "saliency-versus-generic" : "saliency"},
             {"aesthete:score", format_g(r.score)}};
  if (r.is_signed) im.text.emplace_back("aesthete:generic_score", format_g(r.generic_score));
  im.text.emplace_back("Description", std::string(r.is_signed ? "aesthete saliency map, user minus generic. "
                                                              : "aesthete saliency map. ") +
                                          "value = (sample - aesthete:zero) / (65535 - aesthete:zero) * aesthete:scale");
  return im;
}

SaliencyRaw saliency_from_raw_png(const img::Gray16Image& im, const std::string& name) {
  const std::string* scale_text = img::find_text(im, kSaliencyScaleKey);
  const std::string* zero_text = img::find_text(im, kSaliencyZeroKey);
  AE_CHECK(scale_text != nullptr && zero_text != nullptr,
           name << ": not an aesthete saliency map (no " << kSaliencyScaleKey << " / " << kSaliencyZeroKey << " text)");
  char* end = nullptr;
  const double scale = std::strtod(scale_text->c_str(), &end);
  AE_CHECK(end != scale_text->c_str() && *end == '\0' && std::isfinite(scale) && scale >= 0,
           name << ": " << kSaliencyScaleKey << " '" << *scale_text << "' is not a number >= 0");
  AE_CHECK(*zero_text == "0" || *zero_text == "32768",
           name << ": " << kSaliencyZeroKey << " '" << *zero_text << "' must be 0 or 32768");
  SaliencyRaw out;
  out.width = im.width;
  out.height = im.height;
  out.scale = scale;
  out.is_signed = *zero_text == "32768";
  const int zero = out.is_signed ? 32768 : 0;
  const double step = scale / (65535.0 - zero);
  out.values.resize(im.values.size());
  for (std::size_t i = 0; i < im.values.size(); ++i)
    out.values[i] = static_cast<float>((static_cast<double>(im.values[i]) - zero) * step);
  return out;
}

}  // namespace ae::train
