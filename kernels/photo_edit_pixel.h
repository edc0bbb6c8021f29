#pragma once
// The one per-pixel definition of ops::photo_edit_forward / photo_edit_backward_theta (the model is
// documented in kernels/ops.h), compiled into both backends: plain C++ for the CPU backend
// (kernels/cpu/photo_edit_cpu.cpp) and the emulated device, host+device code for nvcc
// (kernels/cuda/photo_edit.cu). The two backends can then differ only in how they split and sum the
// pixels (and in nvcc's contraction of a*b+c), never in what the edit means.
//
//   PhotoEditCoefficients  the per-call scalars, from theta, in double, rounded to float once
//   photo_edit_pixel       y for one RGB pixel
//   photo_edit_accumulate  adds one pixel's raw contributions to the P sums of the backward
//   grad_scale[q]          turns the summed raw contribution of parameter q into d/dtheta_q
#include <math.h>  // ::exp, ::exp2, ::tanh (double), also declared for device code by nvcc

#include <cstdint>

#include "kernels/ops.h"

#if defined(__CUDACC__)
#define AE_PHOTO_EDIT_HD __host__ __device__ __forceinline__
#else
#define AE_PHOTO_EDIT_HD inline
#endif

namespace ae::ops {

inline constexpr int kPhotoEditMaxParams = kPhotoEditFixed + PhotoEditParams::kMaxToneKnots;

struct PhotoEditCoefficients {
  int knots;               // K
  float segments;          // K + 1
  float gain[3];           // R, G, B: 2^e exp(t), 2^e exp(g), 2^e exp(-t)
  float contrast;          // k = exp(c)
  float contrast_offset;   // 0.5 (1 - k)
  float saturation;        // s = exp(s_theta)
  float saturation_offset; // 1 - s
  // Tone curve on segment j (0..K): y = v + offset[j] + slope[j] * f, dy/dv = dv[j].
  float offset[PhotoEditParams::kMaxToneKnots + 2];  // o_0..o_{K+1}; o_0 = o_{K+1} = 0
  float slope[PhotoEditParams::kMaxToneKnots + 1];   // o_{j+1} - o_j
  float dv[PhotoEditParams::kMaxToneKnots + 1];      // 1 + (K+1) (o_{j+1} - o_j)
  // d theta_q = grad_scale[q] * (sum over pixels of the raw contributions to q).
  double grad_scale[kPhotoEditMaxParams];
};

// Luma weights of step 4 (Rec. 601); they sum to 1.
inline constexpr float kLumaR = 0.299f, kLumaG = 0.587f, kLumaB = 0.114f;

// theta holds kPhotoEditFixed + knots floats (knots already validated to 0..kMaxToneKnots).
AE_PHOTO_EDIT_HD PhotoEditCoefficients photo_edit_coefficients(int knots, const float* theta) {
  constexpr double kLn2 = 0.69314718055994530942;
  PhotoEditCoefficients c{};
  c.knots = knots;
  c.segments = static_cast<float>(knots + 1);
  const double e = theta[PhotoEditParams::kExposure], k_log = theta[PhotoEditParams::kContrast];
  const double s_log = theta[PhotoEditParams::kSaturation], t = theta[PhotoEditParams::kTemperature];
  const double g = theta[PhotoEditParams::kTint];
  const double exposure = ::exp2(e);
  c.gain[0] = static_cast<float>(exposure * ::exp(t));
  c.gain[1] = static_cast<float>(exposure * ::exp(g));
  c.gain[2] = static_cast<float>(exposure * ::exp(-t));
  const double k = ::exp(k_log), s = ::exp(s_log);
  c.contrast = static_cast<float>(k);
  c.contrast_offset = static_cast<float>(0.5 * (1.0 - k));
  c.saturation = static_cast<float>(s);
  c.saturation_offset = static_cast<float>(1.0 - s);

  const double half_segment = 0.5 / (knots + 1);
  double o[PhotoEditParams::kMaxToneKnots + 2] = {};
  for (int i = 1; i <= knots; ++i) {
    const double th = ::tanh(static_cast<double>(theta[kPhotoEditFixed + i - 1]));
    o[i] = th * half_segment;
    c.grad_scale[kPhotoEditFixed + i - 1] = (1.0 - th * th) * half_segment;
  }
  for (int i = 0; i <= knots + 1; ++i) c.offset[i] = static_cast<float>(o[i]);
  for (int j = 0; j <= knots; ++j) {
    c.slope[j] = static_cast<float>(o[j + 1] - o[j]);
    c.dv[j] = static_cast<float>(1.0 + (knots + 1) * (o[j + 1] - o[j]));
  }
  c.grad_scale[PhotoEditParams::kExposure] = kLn2;  // d a / d e = ln 2 * a
  c.grad_scale[PhotoEditParams::kContrast] = k;     // d k / d c = k
  c.grad_scale[PhotoEditParams::kSaturation] = s;   // d s / d s_theta = s
  c.grad_scale[PhotoEditParams::kTemperature] = 1.0;
  c.grad_scale[PhotoEditParams::kTint] = 1.0;
  return c;
}

AE_PHOTO_EDIT_HD float photo_edit_clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

// Everything the backward needs about one pixel's forward pass.
struct PhotoEditPixelState {
  float a[3];     // after the gains
  float b[3];     // after contrast
  float luma;     // L of b
  float d[3];     // after saturation, before the clamp
  float v[3];     // clamped
  int segment[3]; // tone-curve segment j
  float f[3];     // position in the segment, 0..1
  float y[3];
};

AE_PHOTO_EDIT_HD PhotoEditPixelState photo_edit_pixel_state(const PhotoEditCoefficients& c, const float x[3]) {
  PhotoEditPixelState s;
  for (int ch = 0; ch < 3; ++ch) {
    s.a[ch] = x[ch] * c.gain[ch];
    s.b[ch] = c.contrast * s.a[ch] + c.contrast_offset;
  }
  s.luma = kLumaR * s.b[0] + kLumaG * s.b[1] + kLumaB * s.b[2];
  for (int ch = 0; ch < 3; ++ch) {
    s.d[ch] = c.saturation * s.b[ch] + c.saturation_offset * s.luma;
    const float v = photo_edit_clamp01(s.d[ch]);
    s.v[ch] = v;
    // j = min(floor(w), K) for w >= 0; the comparisons also send a NaN to segment 0 (never an
    // out-of-range index), where it stays NaN.
    const float w = v * c.segments;
    const int j = w >= static_cast<float>(c.knots) ? c.knots : (w > 0.0f ? static_cast<int>(w) : 0);
    const float f = w - static_cast<float>(j);
    s.segment[ch] = j;
    s.f[ch] = f;
    s.y[ch] = photo_edit_clamp01(v + (c.offset[j] + c.slope[j] * f));
  }
  return s;
}

AE_PHOTO_EDIT_HD void photo_edit_pixel(const PhotoEditCoefficients& c, const float x[3], float y[3]) {
  const PhotoEditPixelState s = photo_edit_pixel_state(c, x);
  y[0] = s.y[0];
  y[1] = s.y[1];
  y[2] = s.y[2];
}

// Adds one pixel's raw contributions to acc[q * stride], q = 0..P-1 (P = kPhotoEditFixed + K), in a
// fixed order. Multiplied by grad_scale[q] after summing over pixels they give d sum(dy*y) / d theta_q.
AE_PHOTO_EDIT_HD void photo_edit_accumulate(const PhotoEditCoefficients& c, const float x[3], const float dy[3],
                                            double* acc, int64_t stride) {
  const PhotoEditPixelState s = photo_edit_pixel_state(c, x);
  // Tone curve: y = v + o_j (1 - f) + o_{j+1} f, so dy/do_j = 1 - f and dy/do_{j+1} = f (o_0 and
  // o_{K+1} are constants; o_i, i = 1..K, is theta index kPhotoEditFixed + i - 1), and dy/dv = dv[j].
  // Then the clamp: g = dL/dd.
  float g[3];
  for (int ch = 0; ch < 3; ++ch) {
    const int j = s.segment[ch];
    if (j >= 1) acc[(kPhotoEditFixed + j - 1) * stride] += dy[ch] * (1.0f - s.f[ch]);
    if (j + 1 <= c.knots) acc[(kPhotoEditFixed + j) * stride] += dy[ch] * s.f[ch];
    g[ch] = (s.d[ch] >= 0.0f && s.d[ch] <= 1.0f) ? dy[ch] * c.dv[j] : 0.0f;
  }
  // Saturation: d = s b + (1 - s) L  ->  dd/ds = b - L, dd/db_c = s [c] + (1 - s) w_c.
  const float g_sum = g[0] + g[1] + g[2];
  const float luma_weight[3] = {kLumaR, kLumaG, kLumaB};
  float sat = 0.0f, con = 0.0f, h[3];
  for (int ch = 0; ch < 3; ++ch) {
    sat += g[ch] * (s.b[ch] - s.luma);
    h[ch] = c.saturation * g[ch] + c.saturation_offset * luma_weight[ch] * g_sum;
  }
  // Contrast: b = k a + 0.5 (1 - k)  ->  db/dk = a - 0.5, db/da = k.
  float ga[3];
  for (int ch = 0; ch < 3; ++ch) {
    con += h[ch] * (s.a[ch] - 0.5f);
    ga[ch] = c.contrast * h[ch] * s.a[ch];  // dL/da * a: the derivative through a log-gain
  }
  acc[PhotoEditParams::kExposure * stride] += ga[0] + ga[1] + ga[2];
  acc[PhotoEditParams::kContrast * stride] += con;
  acc[PhotoEditParams::kSaturation * stride] += sat;
  acc[PhotoEditParams::kTemperature * stride] += ga[0] - ga[2];
  acc[PhotoEditParams::kTint * stride] += ga[1];
}

}  // namespace ae::ops
