#pragma once
// The op list. Every op is a free function here, taking its parameter struct and tensors,
// dispatched on the device of its inputs to cpu:: (kernels/cpu/) or cuda:: (kernels/cuda/).
// Parameter structs are defined once, here, so the backends can never disagree on meaning.
//
// Layouts (DESIGN.md): activations NHWC [N,H,W,C]; conv weights OHWI [O,KH,KW,I];
// linear weights [out,in] (PyTorch's layout); "channels" of BatchNorm/PReLU are the last dim.
// All tensors f32 unless stated. Ops return freshly allocated outputs on the inputs' device.
// An op or shape a backend does not support is an ae::Error naming op, shape and device:
// there is no silent fallback to another backend.
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace ae::ops {

// ---------------------------------------------------------------- convolution (groups = 1)
// Output size of a sliding window (convolution, pooling) over `in` elements: PyTorch's floor
// formula, dilation 1. The one definition; kernels/conv_geometry.h builds a convolution's whole
// geometry on it. (in + 2*pad >= kernel is checked before use: C++ division truncates toward zero.)
constexpr int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}
struct Conv2dParams {
  int kernel_h = 3, kernel_w = 3;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  // Output size for an input of h x w.
  int64_t out_h(int64_t h) const { return conv_out_size(h, kernel_h, stride_h, pad_h); }
  int64_t out_w(int64_t w) const { return conv_out_size(w, kernel_w, stride_w, pad_w); }
};
// x [N,H,W,C], w [O,KH,KW,C] -> y [N,OH,OW,O]. x and w are f32, or both bf16 (storage: y is f32;
// the CPU and the CUDA device outside bf16 math compute on the exactly widened values, CUDA in
// bf16 math reads them as they are: kernels/cuda/conv_implicit_gemm.h, "bf16 storage").
Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w);
// dy [N,OH,OW,O], w [O,KH,KW,C] -> dx with x_shape [N,H,W,C]
Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape);
// x [N,H,W,C] (f32, or bf16: widened first), dy [N,OH,OW,O] -> dw [O,KH,KW,C]
Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape);
// A 1x1 kernel folded into the centre tap of a 3x3 one: W' = W except W'[o,1,1,i] = W[o,1,1,i] +
// A[o,0,0,i] (w [O,3,3,C], a [O,1,1,C], f32, one device). A 3x3/pad-1 convolution with W' equals the
// 3x3 one with W plus the 1x1/pad-0 one with A at the same stride (the centre tap reads the pixel
// the 1x1 reads), up to the order of the sum: a residual adapter folded into its convolution
// (model/basic_block.h). Linear in both: dL/dW = dL/dW', dL/dA = the centre tap of dL/dW'.
Tensor conv_fold_centre_tap(const Tensor& w, const Tensor& a);

// ---------------------------------------------------------------- batch normalisation
// Normalises over every dimension but the last: BatchNorm2d on NHWC and BatchNorm1d on [N,C]
// are the same op. Training mode uses batch statistics (biased variance for normalising) and
// updates running stats PyTorch's way: r = (1-momentum)*r + momentum*batch_stat, with the
// unbiased variance (M/(M-1)) for running_var.
struct BatchNormParams {
  float eps = 1e-5f;
  float momentum = 0.1f;
};
struct BatchNormTrainOut {
  Tensor y;
  Tensor save_mean;    // [C] batch mean
  Tensor save_invstd;  // [C] 1/sqrt(biased batch var + eps)
};
// x [...,C], gamma/beta [C]; running_mean/var [C] updated in place.
BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, Tensor& running_mean, Tensor& running_var);
Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var);
struct BatchNormGrads {
  Tensor dx, dgamma, dbeta;
};
// Backward of training mode (through the batch statistics).
// relu_y (optional, x's shape): the output of a ReLU applied after this BatchNorm (y = relu(bn(x))
// or relu(bn(x) + residual)), with dy the gradient of that output: the op then runs ReLU's backward
// as it reads dy (dy where relu_y > 0, else 0), bit for bit
// batchnorm_backward_train(x, relu_backward(relu_y, dy), ...) without writing the masked gradient.
// relu_y may be bf16 (a stored activation: the mask of the stored value, the one the next layer read).
BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                        const Tensor& save_mean, const Tensor& save_invstd,
                                        const Tensor& relu_y = Tensor());
// Backward of eval mode (statistics are constants): dx = dy*gamma*invstd(running_var).
BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy,
                                       const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var);

// ---------------------------------------------------------------- activations
Tensor relu_forward(const Tensor& x);
// dx = dy where y > 0 (y is relu's output; at 0 the gradient is 0, as in PyTorch). y may be bf16
// (a stored activation: the mask of the stored value, the one the next layer read).
Tensor relu_backward(const Tensor& y, const Tensor& dy);

// slope [1] (shared) or [C] (per channel, C = last dim of x).
Tensor prelu_forward(const Tensor& x, const Tensor& slope);
struct PReluGrads {
  Tensor dx, dslope;
};
PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy);

// Inverted dropout: keep element i when philox::uniform(seed, offset + i) >= p, scale kept by 1/(1-p).
// `device_offset`, when defined (i64 [1] on x's device), is read by the forward when it runs and
// added to `offset`: a captured graph (kernels/graph.h) would freeze `offset` at its capture, so a
// graphed training step writes each step's offset there before each replay for fresh masks.
struct DropoutParams {
  float p = 0.5f;
  uint64_t seed = 0;
  uint64_t offset = 0;
  Tensor device_offset;
};
struct DropoutOut {
  Tensor y;
  Tensor mask;  // u8, 1 = kept
};
DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x);
Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy);

// ---------------------------------------------------------------- elementwise
Tensor add(const Tensor& a, const Tensor& b);            // same shapes
Tensor scale(const Tensor& a, float s);                  // s * a
void add_inplace(Tensor& a, const Tensor& b, float s = 1.0f);  // a += s * b
Tensor add_relu(const Tensor& a, const Tensor& b);       // relu(a + b): the residual join
// x converted to dtype `to` (f32 <-> bf16), on x's device, as a new contiguous tensor: to bf16
// rounds to nearest, ties to even, NaN to the canonical 0x7FFF (runtime/bf16.h); to f32 is exact.
// Casting to x's own dtype returns x itself (shared storage, no copy). A storage conversion with
// no backward: the f32 tensor it came from is the one that takes gradients.
Tensor cast(const Tensor& x, DType to);

// ---------------------------------------------------------------- pooling
struct MaxPool2dParams {
  int kernel_h = 3, kernel_w = 3;
  int stride_h = 2, stride_w = 2;
  int pad_h = 1, pad_w = 1;
  // False: y only, MaxPoolOut::argmax left undefined (inference: the i64 argmax is twice the size
  // of y and only a backward reads it).
  bool with_argmax = true;
  int64_t out_h(int64_t h) const { return conv_out_size(h, kernel_h, stride_h, pad_h); }
  int64_t out_w(int64_t w) const { return conv_out_size(w, kernel_w, stride_w, pad_w); }
};
struct MaxPoolOut {
  Tensor y;       // [N,OH,OW,C]
  Tensor argmax;  // i64 [N,OH,OW,C]: flat index h*W+w of the winner in its image plane
};
// x f32, or bf16 (a stored activation: y is bf16 too, exactly the maximum).
MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x);
Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape);

// PyTorch's bins: output i covers [floor(i*H/OH), ceil((i+1)*H/OH)).
struct AdaptiveAvgPool2dParams {
  int64_t out_h = 1, out_w = 1;
};
// x f32 or bf16 (widened as it is read); y f32.
Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x);
Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape);

// ---------------------------------------------------------------- linear
// x [N,in], w [out,in], bias [out] or undefined -> y [N,out]
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias);
struct LinearGrads {
  Tensor dx, dw, dbias;
};
// need_dx=false skips the input gradient (first layer of a frozen stack).
LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx = true);

// ---------------------------------------------------------------- loss
// mean((pred - target)^2) over all elements -> [1]
Tensor mse_loss_forward(const Tensor& pred, const Tensor& target);
// d/dpred of the mean, times the scalar upstream gradient dloss.
Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss = 1.0f);

// ---------------------------------------------------------------- optimisers (in place)
// torch.optim.SGD: g = grad + wd*param; buf = momentum*buf + (1-dampening)*g (buf = g at the
// first step); g = nesterov ? g + momentum*buf : buf; param -= lr*g.
struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};
// step is 1 for the first step (decides the momentum-buffer initialisation).
void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step);

// torch.optim.Adam / AdamW (decoupled = true), amsgrad off:
//   Adam:  g = grad + wd*param.   AdamW: param *= (1 - lr*wd).
//   m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   param -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;
};
void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step);

// The same steps over many tensors at once (one kernel launch on CUDA instead of one per
// tensor), each list entry i updated exactly as the single-tensor op would update it: results are
// bitwise equal to calling sgd_step / adam_step per entry. The lists have equal lengths and every
// tensor sits on one device; an empty list does nothing. Momentum buffers may be undefined (not
// null) when momentum is 0.
void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step);
void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step);

}  // namespace ae::ops

// ---------------------------------------------------------------- image (kernels/image.cpp)
namespace ae::ops {

// ImageNet preprocessing: y = (x/255 for u8, x for f32 - mean[c]) / std[c], C = last dim (1..4).
// x is u8 or f32 [H,W,C] (one image, y gets N = 1) or [N,H,W,C]; y is f32 [N,H,W,C]. The float
// operations are train/preprocess.cpp's (normalize_imagenet after to_float), bit for bit.
struct NormalizeImageParams {
  static constexpr int kMaxChannels = 4;
  float mean[kMaxChannels] = {0.485f, 0.456f, 0.406f, 0.0f};
  float std[kMaxChannels] = {0.229f, 0.224f, 0.225f, 1.0f};
};
Tensor normalize_image(const NormalizeImageParams& p, const Tensor& x);
// dx = dy / std[c] (f32 inputs only: a u8 image has no gradient); dx has x_shape (3-d or 4-d).
Tensor normalize_image_backward(const NormalizeImageParams& p, const Tensor& dy, const Shape& x_shape);

// torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False) on NHWC
// f32: half-pixel centres, source coordinate (o + 0.5) * in/out - 0.5 clamped below at 0 (in
// double, weights rounded to float), the neighbour clamped to the edge, rows then columns. The
// same definition and summation order as train/preprocess.cpp's resize_bilinear (bit for bit on
// the CPU). An unchanged size is the identity.
struct ResizeBilinearParams {
  int64_t out_h = 224, out_w = 224;
};
// x [N,H,W,C] -> y [N,out_h,out_w,C]
Tensor resize_bilinear_forward(const ResizeBilinearParams& p, const Tensor& x);
// The adjoint: dy [N,out_h,out_w,C] -> dx with x_shape [N,H,W,C]; a gather over the outputs that
// read each input pixel (deterministic, no atomics).
Tensor resize_bilinear_backward(const ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape);

}  // namespace ae::ops

// ---------------------------------------------------------------- fused epilogues (kernels/fused.cpp)
namespace ae::ops {

// Batch norm applied with known per-channel statistics, the residual join and ReLU in one pass:
//   y = [relu]( (x - mean[c]) * (gamma[c] * invstd[c]) + beta[c] [+ residual] )
// with the same float operations, in the same order, as batchnorm_forward_eval (or the
// normalisation inside batchnorm_forward_train) followed by add_relu / relu_forward, so the fused
// and unfused paths give the same bits on the CPU. A forward-only inference op (no backward).
enum class BatchNormStats {
  running,  // stats = running_mean, running_var; invstd = 1/sqrt(var + eps) (eval mode)
  saved,    // stats = save_mean, save_invstd of batchnorm_forward_train (train mode, after the
            // statistics are known)
};
struct BatchNormApplyParams {
  float eps = 1e-5f;  // used with BatchNormStats::running only
  BatchNormStats stats = BatchNormStats::running;
  bool relu = false;
  // Write y over x's storage and return x: for inference, where x is dead once normalised, so a
  // layer's output does not need a second buffer of its size (the peak memory of a forward). Same
  // bits as the out-of-place op; x must not be used afterwards as the pre-normalisation value.
  // Ignored when y is bf16 (a new tensor of half x's bytes).
  bool in_place = false;
  // y's dtype: f32, or bf16 (activation storage: y is computed in f32 as always and rounded once,
  // nearest even: the bits of ops::cast of the f32 result).
  DType out_dtype = DType::f32;
};
// x [...,C] f32; gamma, beta, mean, var_or_invstd [C]; residual: x's shape, f32 or bf16 (widened
// exactly as it is read), or undefined for none.
Tensor batchnorm_apply(const BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual);

// A convolution and its batchnorm_apply in one op, for inference (forward only):
//   y = batchnorm_apply(bn, conv2d_forward(conv, x, w), gamma, beta, mean, var_or_invstd, residual)
// with the same bits as those two ops in sequence (bn.in_place is ignored: the convolution's output
// is never returned raw). The CPU applies the BatchNorm, residual and ReLU as each output leaves the
// convolution's registers on the direct paths (kernels/cpu/conv_direct.h), saving a read and a
// write of y, and runs batchnorm_apply over y in place after the other paths; other backends compose
// the two ops. residual: the output's shape [N,OH,OW,O], or undefined for none. bf16: x and w as
// conv2d_forward, residual and bn.out_dtype as batchnorm_apply.
Tensor conv2d_batchnorm(const Conv2dParams& conv, const BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                        const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                        const Tensor& residual);

// A convolution and its training-mode BatchNorm (batch statistics, running statistics updated),
// then the residual and ReLU, for the training forward. Defined as the sequence
//   conv = conv2d_forward(conv, x, w)
//   bn_out = batchnorm_forward_train(bn, conv, gamma, beta, running_mean, running_var)
//   y = relu ? (residual ? add_relu(bn_out.y, residual) : relu_forward(bn_out.y))
//            : (residual ? add(bn_out.y, residual) : bn_out.y)
// and returns what the backward needs: conv (BatchNorm's input), the saved statistics and y
// (ReLU's output). The CPU runs exactly that sequence (the same bits). The CUDA backend gathers
// the statistics in the convolution kernels' epilogue (per output tile, from the tile just
// written, so no pass of its own over conv) and applies BatchNorm, residual and ReLU in one pass:
// its statistics are another summation order of the same double sums (they may differ from the
// sequence's in the last float bit), and y is batchnorm_apply with those statistics, bit for bit.
// residual: the output's shape [N,OH,OW,O], or undefined for none.
struct ConvBatchNormTrainOut {
  Tensor conv;         // the convolution's output [N,OH,OW,O]
  Tensor y;            // [relu](BatchNorm(conv) [+ residual])
  Tensor save_mean;    // [O] as batchnorm_forward_train's
  Tensor save_invstd;  // [O]
};
// x and w may both be bf16 (as conv2d_forward), residual f32 or bf16; y_dtype bf16 stores y as
// bf16 (computed in f32, rounded once: ops::cast of the f32 y). conv, the statistics and every
// gradient stay f32.
ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu,
                                             const Tensor& x, const Tensor& w, const Tensor& gamma,
                                             const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                             const Tensor& residual, DType y_dtype = DType::f32);

}  // namespace ae::ops

// ---------------------------------------------------------------- photo edits (kernels/photo_edit.cpp)
namespace ae::ops {

// Differentiable global photo edits ("aesthete enhance --mode global"): a few edit parameters theta,
// optimised at working resolution, then applied to the full-size photo with the same op. The enhancer
// keeps theta within its own bounds; the op takes any finite theta.
//
// theta is f32 [kPhotoEditFixed + tone_knots] = exposure e (stops), contrast c, saturation s,
// temperature t, tint g, then the tone-curve parameters z_1..z_K (K = tone_knots). Per pixel, on
// RGB x in [0,1] (u8 inputs are x = u8 / 255.0f first), in this order:
//   1-2. exposure and white balance, one gain per channel:
//          a_R = x_R * 2^e * exp(t),   a_G = x_G * 2^e * exp(g),   a_B = x_B * 2^e * exp(-t)
//        (temperature > 0 warms: R up, B down; tint > 0 greens, < 0 leans magenta).
//   3.   contrast around mid-grey:  b = 0.5 + (a - 0.5) * exp(c),  computed as exp(c)*a + 0.5*(1 - exp(c)).
//   4.   saturation around luma L = 0.299 b_R + 0.587 b_G + 0.114 b_B:
//          d = L + (b - L) * exp(s),  computed as exp(s)*b + (1 - exp(s))*L;
//        the luma of d is L again (the weights sum to 1).
//   5.   v = clamp(d, 0, 1). Gradient: passed where 0 <= d <= 1 (inclusive, as torch.clamp), 0 outside.
//   6.   tone curve: piecewise linear through the K+2 knots (u_i, q_i), u_i = i/(K+1), i = 0..K+1, with
//          q_0 = 0, q_{K+1} = 1,  q_i = u_i + o_i,  o_i = tanh(z_i) / (2(K+1))  (i = 1..K).
//        Each knot moves less than half a segment, so the curve never decreases (it is strictly
//        increasing unless some |z_i| is so large that tanh rounds to +-1), maps [0,1] onto [0,1] with
//        0 -> 0 and 1 -> 1, and is the identity at z = 0. Evaluated as
//          y = v + o_j + (o_{j+1} - o_j) * f,   w = v*(K+1), j = min(floor(w), K), f = w - j,
//        (o_0 = o_{K+1} = 0), then clamped to [0,1] against float rounding only (the exact curve never
//        leaves [0,1]; the backward treats that clamp as the identity). At a knot the slope is that of
//        the segment on its right (the last segment at v = 1).
// Per-parameter scalars (gains, exp(c), exp(s), the o_i) are computed once per call in double from
// theta and rounded to float; the per-pixel arithmetic is float. With theta = 0 every step is exactly
// the identity in float (gains 1, offsets 0), so y == x bit for bit for x in [0,1]. (x outside [0,1]
// is not an error: step 5 clamps it.)
// kernels/photo_edit_pixel.h holds the one per-pixel definition both backends run.
inline constexpr int kPhotoEditFixed = 5;
struct PhotoEditParams {
  static constexpr int kExposure = 0, kContrast = 1, kSaturation = 2, kTemperature = 3, kTint = 4;
  static constexpr int kMaxToneKnots = 16;
  int tone_knots = 4;  // K, 0..kMaxToneKnots (0: no tone curve)
  int64_t theta_size() const { return kPhotoEditFixed + tone_knots; }
};
// x [N,H,W,3] or [H,W,3], f32 RGB in [0,1] or u8; theta f32 [kPhotoEditFixed + tone_knots], on x's
// device -> y f32 with x's shape, in [0,1].
Tensor photo_edit_forward(const PhotoEditParams& p, const Tensor& x, const Tensor& theta);
// Gradient of sum(dy * y) with respect to theta (no dx: enhancement differentiates theta only).
// dy f32 with x's shape -> dtheta f32 [kPhotoEditFixed + tone_knots]. The sum over pixels runs in
// double in a fixed order (fixed chunks on the CPU, per-block partials then one ordered pass on
// CUDA): the same inputs give the same bits every run.
Tensor photo_edit_backward_theta(const PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy);

}  // namespace ae::ops
