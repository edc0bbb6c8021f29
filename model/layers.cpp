#include "model/layers.h"

#include <cstring>

namespace ae::model {

const char* group_name(ParamGroup g) {
  switch (g) {
    case ParamGroup::backbone: return "backbone";
    case ParamGroup::bn_affine: return "bn_affine";
    case ParamGroup::adapters: return "adapters";
    case ParamGroup::head: return "head";
  }
  return "?";
}

void Param::accumulate(const Tensor& g) {
  AE_CHECK(g.shape() == value.shape(), "gradient " << g.desc() << " does not match parameter " << value.desc());
  if (!grad.defined()) {
    grad = g;
  } else {
    ops::add_inplace(grad, g);
  }
}

namespace {

// Permutes a 4-d CPU f32 tensor's dimensions: out[d[0]][d[1]][d[2]][d[3]] order given by `perm`
// (out dim i = in dim perm[i]).
Tensor permute4(const Tensor& w, const int perm[4], const char* what) {
  AE_CHECK(w.ndim() == 4 && w.dtype() == DType::f32, what << ": expected a 4-d f32 tensor, got " << w.desc());
  const Tensor src = w.to(Device::cpu());
  const Shape& s = src.shape();
  Shape os(4);
  for (int i = 0; i < 4; ++i) os[i] = s[perm[i]];
  Tensor out = Tensor::empty(os);
  int64_t in_stride[4];
  in_stride[3] = 1;
  for (int i = 2; i >= 0; --i) in_stride[i] = in_stride[i + 1] * s[i + 1];
  const float* in = src.f32();
  float* o = out.f32();
  int64_t k = 0;
  for (int64_t a = 0; a < os[0]; ++a)
    for (int64_t b = 0; b < os[1]; ++b)
      for (int64_t c = 0; c < os[2]; ++c)
        for (int64_t d = 0; d < os[3]; ++d)
          o[k++] = in[a * in_stride[perm[0]] + b * in_stride[perm[1]] + c * in_stride[perm[2]] +
                      d * in_stride[perm[3]]];
  return out;
}

void require_kept(bool kept, const char* layer) {
  AE_CHECK(kept, layer << ".backward: no activations kept; call forward with keep=true (grad enabled) first, "
                       "and only once per backward");
}

}  // namespace

Tensor oihw_to_ohwi(const Tensor& w) {
  static const int perm[4] = {0, 2, 3, 1};
  return permute4(w, perm, "oihw_to_ohwi");
}

Tensor ohwi_to_oihw(const Tensor& w) {
  static const int perm[4] = {0, 3, 1, 2};
  return permute4(w, perm, "ohwi_to_oihw");
}

void StateEntry::load_from_file(const Tensor& t) const {
  if (param != nullptr) {
    param->value.copy_from(conv_weight ? oihw_to_ohwi(t) : t);
    param->grad = Tensor();
  } else if (buffer != nullptr) {
    buffer->copy_from(t);
  } else {
    *counter = *t.to(Device::cpu()).data<int64_t>();
  }
}

// ---------------------------------------------------------------- Conv2d

Tensor operand_weight(const Tensor& w, const Tensor& x) {
  return x.dtype() == DType::bf16 ? ops::cast(w, DType::bf16) : w;
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int kernel, int stride, int pad, ParamGroup group) {
  weight.value = Tensor::zeros({out_channels, kernel, kernel, in_channels});
  weight.group = group;
  params.kernel_h = params.kernel_w = kernel;
  params.stride_h = params.stride_w = stride;
  params.pad_h = params.pad_w = pad;
}

Tensor Conv2d::forward(const Tensor& x, bool keep) {
  // Only the weight gradient reads the input; a frozen conv keeps its shape alone (frozen means
  // no work and no memory: personalisation and input gradients backpropagate through frozen convs).
  x_ = keep && weight.trainable ? x : Tensor();
  x_shape_ = x.shape();
  kept_ = keep;
  return ops::conv2d_forward(params, x, operand_weight(weight.value, x));
}

Tensor Conv2d::forward_batchnorm(const Tensor& x, const BatchNorm& bn, const Tensor& residual, bool relu,
                                 const Tensor* w, DType y_dtype) {
  x_ = Tensor();
  x_shape_ = x.shape();
  kept_ = false;
  ops::BatchNormApplyParams p;
  p.eps = bn.params.eps;
  p.stats = ops::BatchNormStats::running;
  p.relu = relu;
  p.out_dtype = y_dtype;
  return ops::conv2d_batchnorm(params, p, x, operand_weight(w ? *w : weight.value, x), bn.weight.value, bn.bias.value,
                               bn.running_mean, bn.running_var, residual);
}

Tensor Conv2d::forward_batchnorm_train(const Tensor& x, BatchNorm& bn, const Tensor& residual, bool relu, bool keep,
                                       DType y_dtype) {
  x_ = keep && weight.trainable ? x : Tensor();
  x_shape_ = x.shape();
  kept_ = keep;
  ops::ConvBatchNormTrainOut out = ops::conv2d_batchnorm_train(params, bn.params, relu, x,
                                                               operand_weight(weight.value, x), bn.weight.value,
                                                               bn.bias.value, bn.running_mean, bn.running_var,
                                                               residual, y_dtype);
  bn.adopt_training_forward(out.conv, out.save_mean, out.save_invstd, keep);
  return out.y;
}

Tensor Conv2d::backward(const Tensor& dy, bool need_dx) {
  require_kept(kept_, "Conv2d");
  kept_ = false;
  if (weight.trainable) {
    AE_CHECK(x_.defined(), "Conv2d.backward: the weight was frozen during the forward and is trainable now; run the "
                           "forward again after changing what is trainable");
    weight.accumulate(ops::conv2d_backward_weight(params, x_, dy, weight.value.shape()));
  }
  Tensor dx = need_dx ? ops::conv2d_backward_data(params, dy, weight.value, x_shape_) : Tensor();
  x_ = Tensor();
  return dx;
}

void Conv2d::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
  StateEntry e;
  e.name = prefix + "weight";
  e.param = &weight;
  e.conv_weight = true;
  out.push_back(e);
}

// ---------------------------------------------------------------- BatchNorm

BatchNorm::BatchNorm(int64_t channels, ParamGroup affine_group) {
  weight.value = Tensor::full({channels}, 1.0f);
  bias.value = Tensor::zeros({channels});
  weight.group = bias.group = affine_group;
  running_mean = Tensor::zeros({channels});
  running_var = Tensor::full({channels}, 1.0f);
}

Tensor BatchNorm::forward(const Tensor& x, bool training, bool keep) {
  x_ = Tensor();
  save_mean_ = save_invstd_ = Tensor();
  Tensor y;
  if (training) {
    ops::BatchNormTrainOut r =
        ops::batchnorm_forward_train(params, x, weight.value, bias.value, running_mean, running_var);
    ++num_batches_tracked;
    y = r.y;
    if (keep) {
      save_mean_ = r.save_mean;
      save_invstd_ = r.save_invstd;
    }
  } else {
    y = ops::batchnorm_forward_eval(params, x, weight.value, bias.value, running_mean, running_var);
  }
  if (keep) x_ = x;
  kept_training_ = training;
  return y;
}

void BatchNorm::adopt_training_forward(const Tensor& x, const Tensor& save_mean, const Tensor& save_invstd, bool keep) {
  ++num_batches_tracked;
  x_ = keep ? x : Tensor();
  save_mean_ = keep ? save_mean : Tensor();
  save_invstd_ = keep ? save_invstd : Tensor();
  kept_training_ = true;
}

Tensor BatchNorm::backward_through_relu(const Tensor& dy, const Tensor& relu_y, bool need_dx) {
  require_kept(x_.defined(), "BatchNorm");
  const bool need_affine = weight.trainable || bias.trainable;
  Tensor dx;
  if (need_dx || need_affine) {
    // Eval statistics have no fused form: the ReLU's backward runs first there.
    ops::BatchNormGrads g =
        kept_training_ ? ops::batchnorm_backward_train(x_, dy, weight.value, save_mean_, save_invstd_, relu_y)
                       : ops::batchnorm_backward_eval(params, x_, relu_y.defined() ? ops::relu_backward(relu_y, dy) : dy,
                                                      weight.value, running_mean, running_var);
    if (weight.trainable) weight.accumulate(g.dgamma);
    if (bias.trainable) bias.accumulate(g.dbeta);
    if (need_dx) dx = g.dx;
  }
  x_ = save_mean_ = save_invstd_ = Tensor();
  return dx;
}

Tensor BatchNorm::backward(const Tensor& dy, bool need_dx) { return backward_through_relu(dy, Tensor(), need_dx); }

void BatchNorm::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
  StateEntry w, b, m, v, n;
  w.name = prefix + "weight";
  w.param = &weight;
  b.name = prefix + "bias";
  b.param = &bias;
  m.name = prefix + "running_mean";
  m.buffer = &running_mean;
  v.name = prefix + "running_var";
  v.buffer = &running_var;
  n.name = prefix + "num_batches_tracked";
  n.counter = &num_batches_tracked;
  out.insert(out.end(), {w, b, m, v, n});
}

// ---------------------------------------------------------------- Linear

Linear::Linear(int64_t in_features, int64_t out_features, ParamGroup group) {
  weight.value = Tensor::zeros({out_features, in_features});
  bias.value = Tensor::zeros({out_features});
  weight.group = bias.group = group;
}

Tensor Linear::forward(const Tensor& x, bool keep) {
  x_ = keep ? x : Tensor();
  return ops::linear_forward(x, weight.value, bias.value);
}

Tensor Linear::backward(const Tensor& dy, bool need_dx) {
  require_kept(x_.defined(), "Linear");
  Tensor dx;
  if (need_dx || weight.trainable || bias.trainable) {
    ops::LinearGrads g = ops::linear_backward(x_, weight.value, dy, /*has_bias=*/true, need_dx);
    if (weight.trainable) weight.accumulate(g.dw);
    if (bias.trainable) bias.accumulate(g.dbias);
    dx = g.dx;
  }
  x_ = Tensor();
  return need_dx ? dx : Tensor();
}

void Linear::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
  StateEntry w, b;
  w.name = prefix + "weight";
  w.param = &weight;
  b.name = prefix + "bias";
  b.param = &bias;
  out.insert(out.end(), {w, b});
}

// ---------------------------------------------------------------- PReLU

PReLU::PReLU(ParamGroup group) {
  weight.value = Tensor::full({1}, 0.25f);
  weight.group = group;
}

Tensor PReLU::forward(const Tensor& x, bool keep) {
  x_ = keep ? x : Tensor();
  return ops::prelu_forward(x, weight.value);
}

Tensor PReLU::backward(const Tensor& dy, bool need_dx) {
  require_kept(x_.defined(), "PReLU");
  Tensor dx;
  if (need_dx || weight.trainable) {
    ops::PReluGrads g = ops::prelu_backward(x_, weight.value, dy);
    if (weight.trainable) weight.accumulate(g.dslope);
    if (need_dx) dx = g.dx;
  }
  x_ = Tensor();
  return dx;
}

void PReLU::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
  StateEntry w;
  w.name = prefix + "weight";
  w.param = &weight;
  out.push_back(w);
}

// ---------------------------------------------------------------- Dropout

Dropout::Dropout(float p_) : p(p_) {
  AE_CHECK(p_ >= 0.0f && p_ < 1.0f, "Dropout: p = " << p_ << " must be in [0, 1)");
}

Tensor Dropout::forward(const Tensor& x, bool training, uint64_t seed, uint64_t offset, bool keep,
                        const Tensor& device_offset) {
  identity_ = !training || p == 0.0f;
  kept_ = keep;
  mask_ = Tensor();
  if (identity_) return x;
  used_.p = p;
  used_.seed = seed;
  used_.offset = offset;
  used_.device_offset = device_offset;
  ops::DropoutOut r = ops::dropout_forward(used_, x);
  if (keep) mask_ = r.mask;
  return r.y;
}

Tensor Dropout::backward(const Tensor& dy, bool need_dx) {
  require_kept(kept_, "Dropout");
  kept_ = false;
  if (!need_dx) return Tensor();
  Tensor dx = identity_ ? dy : ops::dropout_backward(used_, mask_, dy);
  mask_ = Tensor();
  return dx;
}

// ---------------------------------------------------------------- ReLU, pooling

Tensor ReLU::forward(const Tensor& x, bool keep) {
  Tensor y = ops::relu_forward(x);
  y_ = keep ? y : Tensor();
  return y;
}

void ReLU::adopt_output(const Tensor& y, bool keep) { y_ = keep ? y : Tensor(); }

Tensor ReLU::take_output() {
  require_kept(y_.defined(), "ReLU");
  Tensor y = std::move(y_);
  y_ = Tensor();
  return y;
}

Tensor ReLU::backward(const Tensor& dy, bool need_dx) {
  require_kept(y_.defined(), "ReLU");
  Tensor dx = need_dx ? ops::relu_backward(y_, dy) : Tensor();
  y_ = Tensor();
  return dx;
}

Tensor MaxPool2d::forward(const Tensor& x, bool keep) {
  ops::MaxPool2dParams p = params;
  p.with_argmax = keep;
  ops::MaxPoolOut r = ops::maxpool2d_forward(p, x);
  argmax_ = keep ? r.argmax : Tensor();
  x_shape_ = x.shape();
  return r.y;
}

Tensor MaxPool2d::backward(const Tensor& dy, bool need_dx) {
  require_kept(argmax_.defined(), "MaxPool2d");
  Tensor dx = need_dx ? ops::maxpool2d_backward(params, dy, argmax_, x_shape_) : Tensor();
  argmax_ = Tensor();
  return dx;
}

Tensor GlobalAvgPool::forward(const Tensor& x, bool keep) {
  check_ndim("GlobalAvgPool", "x", x, 4);
  x_shape_ = keep ? x.shape() : Shape{};
  const Tensor y = ops::adaptive_avgpool2d_forward(ops::AdaptiveAvgPool2dParams{}, x);
  return y.reshape({x.dim(0), x.dim(3)});
}

Tensor GlobalAvgPool::backward(const Tensor& dy, bool need_dx) {
  require_kept(!x_shape_.empty(), "GlobalAvgPool");
  Tensor dx;
  if (need_dx) {
    const Tensor dy4 = dy.reshape({x_shape_[0], 1, 1, x_shape_[3]});
    dx = ops::adaptive_avgpool2d_backward(ops::AdaptiveAvgPool2dParams{}, dy4, x_shape_);
  }
  x_shape_.clear();
  return dx;
}

}  // namespace ae::model
