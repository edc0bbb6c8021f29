#include "model/basic_block.h"

#include <cmath>

namespace ae::model {

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int stride, bool adapters)
    : conv1(in_channels, out_channels, 3, stride, 1, ParamGroup::backbone),
      conv2(out_channels, out_channels, 3, 1, 1, ParamGroup::backbone),
      bn1(out_channels, ParamGroup::bn_affine),
      bn2(out_channels, ParamGroup::bn_affine),
      has_downsample_(stride != 1 || in_channels != out_channels),
      has_adapters_(adapters) {
  if (has_adapters_) {
    adapter1 = Conv2d(in_channels, out_channels, 1, stride, 0, ParamGroup::adapters);
    adapter2 = Conv2d(out_channels, out_channels, 1, 1, 0, ParamGroup::adapters);
  }
  if (has_downsample_) {
    down_conv = Conv2d(in_channels, out_channels, 1, stride, 0, ParamGroup::backbone);
    down_bn = BatchNorm(out_channels, ParamGroup::bn_affine);
  }
}

namespace {

// Eval-mode batch norm of `bn` on x, then + residual (when defined), then ReLU, in one op, written
// over x (f32 y; a bf16 y is a new tensor): the inference path never reads a convolution's raw
// output again.
Tensor bn_epilogue(const BatchNorm& bn, const Tensor& x, const Tensor& residual, bool relu, DType y_dtype) {
  ops::BatchNormApplyParams p;
  p.eps = bn.params.eps;
  p.stats = ops::BatchNormStats::running;
  p.relu = relu;
  p.in_place = true;
  p.out_dtype = y_dtype;
  return ops::batchnorm_apply(p, x, bn.weight.value, bn.bias.value, bn.running_mean, bn.running_var, residual);
}

// W' = W with A added to its centre tap: W'[o,1,1,i] = W[o,1,1,i] + A[o,0,0,i] (OHWI), on the
// weights' device (ops::conv_fold_centre_tap: no host round trip, so a graph may capture it).
Tensor fold_centre_tap(const Conv2d& conv, const Conv2d& adapter) {
  const ops::Conv2dParams& p = conv.params;
  const ops::Conv2dParams& q = adapter.params;
  AE_CHECK(p.kernel_h == 3 && p.kernel_w == 3 && p.pad_h == 1 && p.pad_w == 1 && q.kernel_h == 1 &&
               q.kernel_w == 1 && q.pad_h == 0 && q.pad_w == 0 && p.stride_h == q.stride_h &&
               p.stride_w == q.stride_w,
           "BasicBlock adapter fold: needs a 3x3/pad-1 conv and a 1x1/pad-0 adapter with the same stride");
  return ops::conv_fold_centre_tap(conv.weight.value, adapter.weight.value);
}

}  // namespace

bool BasicBlock::FoldedWeight::built_from(const Tensor& conv_w, const Tensor& adapter_w) const {
  return value.defined() && conv.same_as(conv_w) && adapter.same_as(adapter_w);
}

void BasicBlock::invalidate_folded_weights() {
  // Only dropping a fold that exists changes what a captured graph may hold: a block without
  // adapters, or with adapters that run unfolded while they have gradients (training, then the
  // validation forward), keeps its generation, so the graph replaying that validation survives the
  // state listings (checkpoints, optimiser set-up) made between epochs.
  if (folded1_.value.defined() || folded2_.value.defined() || backward_fold_.w1.defined()) ++cache_generation_;
  folded1_.clear();
  folded2_.clear();
  backward_fold_ = BackwardFold();
}

namespace {

// W * s per output channel (OHWI: s[o] scales the o-th block of KH*KW*I elements), on the host,
// copied back to W's device; runs only when the cache is rebuilt.
Tensor scale_out_channels(const Tensor& w, const BatchNorm& bn) {
  const Tensor host = w.to(Device::cpu()).clone();
  const std::vector<float> gamma = bn.weight.value.to_vector(), var = bn.running_var.to_vector();
  const int64_t out = host.dim(0), per = host.numel() / out;
  AE_CHECK(static_cast<int64_t>(gamma.size()) == out, "BatchNorm fold: " << gamma.size() << " channels for a conv with "
                                                                         << out << " outputs");
  float* p = host.f32();
  for (int64_t o = 0; o < out; ++o) {
    // The same invstd as the eval BatchNorm ops: 1/sqrt(var + eps) in float.
    const float s = gamma[static_cast<std::size_t>(o)] / std::sqrt(var[static_cast<std::size_t>(o)] + bn.params.eps);
    for (int64_t i = 0; i < per; ++i) p[o * per + i] *= s;
  }
  return host.to(w.device());
}

}  // namespace

std::vector<const Tensor*> BasicBlock::backward_fold_sources() {
  std::vector<const Tensor*> src = {&conv1.weight.value, &bn1.weight.value, &bn1.running_var,
                                    &conv2.weight.value, &bn2.weight.value, &bn2.running_var};
  if (has_adapters_) src.insert(src.end(), {&adapter1.weight.value, &adapter2.weight.value});
  if (has_downsample_) src.insert(src.end(), {&down_conv.weight.value, &down_bn.weight.value, &down_bn.running_var});
  return src;
}

bool BasicBlock::backward_fold_valid() {
  return backward_fold_.w1.defined() && TensorIdentity::all_same(backward_fold_.sources, backward_fold_sources());
}

Tensor BasicBlock::forward_for_input_grad(const Tensor& x, InputGradTape& tape) {
  tape.x_shape = x.shape();
  tape.out = conv_bn(conv1, adapter1, folded1_, bn1, x, Tensor(), /*relu=*/true);
  const Tensor identity = has_downsample_ ? down_conv.forward_batchnorm(x, down_bn, Tensor(), /*relu=*/false,
                                                                       nullptr, activation_dtype)
                                          : x;
  tape.y = conv_bn(conv2, adapter2, folded2_, bn2, tape.out, identity, /*relu=*/true);
  return tape.y;
}

Tensor BasicBlock::backward_input_grad(const Tensor& dy, const InputGradTape& tape) {
  if (!backward_fold_valid()) {
    BackwardFold f;
    f.w1 = scale_out_channels(has_adapters_ ? fold_centre_tap(conv1, adapter1) : conv1.weight.value, bn1);
    f.w2 = scale_out_channels(has_adapters_ ? fold_centre_tap(conv2, adapter2) : conv2.weight.value, bn2);
    if (has_downsample_) f.wd = scale_out_channels(down_conv.weight.value, down_bn);
    f.sources = TensorIdentity::of(backward_fold_sources());
    backward_fold_ = std::move(f);
  }
  const BackwardFold& f = backward_fold_;
  const Tensor dsum = ops::relu_backward(tape.y, dy);  // through relu(bn2(c) + identity)
  const Tensor dout = ops::conv2d_backward_data(conv2.params, dsum, f.w2, tape.out.shape());
  const Tensor da = ops::relu_backward(tape.out, dout);
  Tensor dx = ops::conv2d_backward_data(conv1.params, da, f.w1, tape.x_shape);
  if (has_downsample_)
    ops::add_inplace(dx, ops::conv2d_backward_data(down_conv.params, dsum, f.wd, tape.x_shape));
  else
    ops::add_inplace(dx, dsum);
  return dx;
}

bool BasicBlock::fold_usable(const Conv2d& conv, const Conv2d& adapter) const {
  return fold_adapters && !conv.weight.grad.defined() && !adapter.weight.grad.defined();
}

const Tensor& BasicBlock::folded_weight(const Conv2d& conv, const Conv2d& adapter, FoldedWeight& folded) {
  const Tensor& w = conv.weight.value;
  const Tensor& a = adapter.weight.value;
  if (!folded.built_from(w, a)) {
    ++cache_generation_;
    folded.value = fold_centre_tap(conv, adapter);
    folded.conv = TensorIdentity(w);
    folded.adapter = TensorIdentity(a);
  }
  return folded.value;
}

Tensor BasicBlock::conv_with_adapter(Conv2d& conv, Conv2d& adapter, FoldedWeight& folded, const Tensor& x) {
  if (!fold_usable(conv, adapter)) {  // the weights may be stepped: no cache
    if (folded.value.defined()) ++cache_generation_;
    folded.clear();
    Tensor y = conv.forward(x, /*keep=*/false);
    ops::add_inplace(y, adapter.forward(x, false));
    return y;
  }
  return ops::conv2d_forward(conv.params, x, operand_weight(folded_weight(conv, adapter, folded), x));
}

Tensor BasicBlock::conv_bn(Conv2d& conv, Conv2d& adapter, FoldedWeight& folded, const BatchNorm& bn, const Tensor& x,
                           const Tensor& residual, bool relu) {
  if (!has_adapters_) return conv.forward_batchnorm(x, bn, residual, relu, nullptr, activation_dtype);
  if (!fold_usable(conv, adapter)) {
    return bn_epilogue(bn, conv_with_adapter(conv, adapter, folded, x), residual, relu, activation_dtype);
  }
  return conv.forward_batchnorm(x, bn, residual, relu, &folded_weight(conv, adapter, folded), activation_dtype);
}

Tensor BasicBlock::forward_inference_fused(const Tensor& x) {
  Tensor out = conv_bn(conv1, adapter1, folded1_, bn1, x, Tensor(), /*relu=*/true);
  const Tensor identity = has_downsample_ ? down_conv.forward_batchnorm(x, down_bn, Tensor(), /*relu=*/false,
                                                                       nullptr, activation_dtype)
                                          : x;
  y_ = Tensor();  // nothing kept: a backward after an inference forward is an error
  return conv_bn(conv2, adapter2, folded2_, bn2, out, identity, /*relu=*/true);
}

Tensor BasicBlock::conv_folded_for_training(Conv2d& conv, Conv2d& adapter, const Tensor& x, Tensor& w_out,
                                            Tensor& x_kept, Shape& x_shape) {
  w_out = fold_centre_tap(conv, adapter);
  x_shape = x.shape();
  x_kept = conv.weight.trainable || adapter.weight.trainable ? x : Tensor();
  return ops::conv2d_forward(conv.params, x, operand_weight(w_out, x));
}

Tensor BasicBlock::backward_folded(Conv2d& conv, Conv2d& adapter, const Tensor& dy, const Tensor& w, const Tensor& x,
                                   const Shape& x_shape, bool need_dx) {
  if (conv.weight.trainable || adapter.weight.trainable)
    AE_CHECK(x.defined(), "BasicBlock.backward: a weight was frozen during the forward and is trainable now; run the "
                          "forward again after changing what is trainable");
  if (conv.weight.trainable) conv.weight.accumulate(ops::conv2d_backward_weight(conv.params, x, dy, conv.weight.value.shape()));
  if (adapter.weight.trainable)
    adapter.weight.accumulate(ops::conv2d_backward_weight(adapter.params, x, dy, adapter.weight.value.shape()));
  return need_dx ? ops::conv2d_backward_data(conv.params, dy, w, x_shape) : Tensor();
}

Tensor BasicBlock::conv_bn_train_folded(Conv2d& conv, Conv2d& adapter, BatchNorm& bn, const Tensor& x,
                                        const Tensor& residual, bool relu, bool keep, Tensor& w_out, Tensor& x_kept,
                                        Shape& x_shape) {
  w_out = fold_centre_tap(conv, adapter);
  x_shape = x.shape();
  x_kept = conv.weight.trainable || adapter.weight.trainable ? x : Tensor();
  ops::ConvBatchNormTrainOut out =
      ops::conv2d_batchnorm_train(conv.params, bn.params, relu, x, operand_weight(w_out, x), bn.weight.value,
                                  bn.bias.value, bn.running_mean, bn.running_var, residual, activation_dtype);
  bn.adopt_training_forward(out.conv, out.save_mean, out.save_invstd, keep);
  return out.y;
}

Tensor BasicBlock::forward_training_fused(const Tensor& x, bool keep) {
  TrainFold& f = train_fold_;
  f = TrainFold();
  f.active = has_adapters_;  // forward() sends a block with adapters here only when they fold (keep)
  const Tensor out = f.active ? conv_bn_train_folded(conv1, adapter1, bn1, x, Tensor(), /*relu=*/true, keep, f.w1,
                                                     f.x1, f.x1_shape)
                              : conv1.forward_batchnorm_train(x, bn1, Tensor(), /*relu=*/true, keep, activation_dtype);
  relu1.adopt_output(out, keep);
  const Tensor identity = has_downsample_ ? down_conv.forward_batchnorm_train(x, down_bn, Tensor(), /*relu=*/false,
                                                                             keep, activation_dtype)
                                          : x;
  Tensor y = f.active ? conv_bn_train_folded(conv2, adapter2, bn2, out, identity, /*relu=*/true, keep, f.w2, f.x2,
                                             f.x2_shape)
                      : conv2.forward_batchnorm_train(out, bn2, identity, /*relu=*/true, keep, activation_dtype);
  y_ = keep ? y : Tensor();
  return y;
}

Tensor BasicBlock::forward(const Tensor& x, bool training, bool keep) {
  if (!training && !keep && fuse_inference_epilogues) return forward_inference_fused(x);
  const bool fold_for_training = has_adapters_ && fold_adapters && keep;
  if (training && fuse_training_epilogues && (!has_adapters_ || fold_for_training)) return forward_training_fused(x, keep);
  TrainFold& f = train_fold_;
  f = TrainFold();
  f.active = fold_for_training;
  // conv(x) [+ adapter(x)]: folded (a forward that keeps activations) or as separate layers.
  auto conv_and_adapter = [&](Conv2d& conv, Conv2d& adapter, const Tensor& in, Tensor& w, Tensor& kept, Shape& shape) {
    if (f.active) return conv_folded_for_training(conv, adapter, in, w, kept, shape);
    Tensor y = conv.forward(in, keep);
    if (has_adapters_) ops::add_inplace(y, adapter.forward(in, keep));
    return y;
  };
  const Tensor a = conv_and_adapter(conv1, adapter1, x, f.w1, f.x1, f.x1_shape);
  const Tensor out = relu1.forward(bn1.forward(a, training, keep), keep);
  Tensor c = conv_and_adapter(conv2, adapter2, out, f.w2, f.x2, f.x2_shape);
  // The layer-by-layer path stores f32 (activation_dtype is for the fused epilogues): a bf16 block
  // input (a fused block before this one) is widened for the residual join.
  const Tensor identity =
      has_downsample_ ? down_bn.forward(down_conv.forward(x, keep), training, keep) : ops::cast(x, DType::f32);
  Tensor y = ops::add_relu(bn2.forward(c, training, keep), identity);
  y_ = keep ? y : Tensor();
  return y;
}

Tensor BasicBlock::backward(const Tensor& dy, bool need_dx) {
  invalidate_folded_weights();  // gradients follow, and with them optimiser steps
  AE_CHECK(y_.defined(), "BasicBlock.backward: no activations kept; call forward with keep=true first");
  // relu(bn2(c) + identity): both branches receive the same gradient, dsum = relu_backward(y, dy).
  // The BatchNorms apply ReLU's backward as they read dy (backward_through_relu), so dsum is only
  // written when the identity branch adds it to dx (no downsample).
  const Tensor y = std::move(y_);
  y_ = Tensor();
  const Tensor dsum = has_downsample_ ? Tensor() : ops::relu_backward(y, dy);

  const Tensor dc = has_downsample_ ? bn2.backward_through_relu(dy, y, /*need_dx=*/true) : bn2.backward(dsum, true);
  TrainFold f = std::move(train_fold_);
  train_fold_ = TrainFold();
  Tensor dout;
  if (f.active) {
    dout = backward_folded(conv2, adapter2, dc, f.w2, f.x2, f.x2_shape, /*need_dx=*/true);
  } else {
    dout = conv2.backward(dc, /*need_dx=*/true);
    if (has_adapters_) ops::add_inplace(dout, adapter2.backward(dc, /*need_dx=*/true));
  }
  const Tensor da = bn1.backward_through_relu(dout, relu1.take_output(), /*need_dx=*/true);
  Tensor dx;
  if (f.active) {
    dx = backward_folded(conv1, adapter1, da, f.w1, f.x1, f.x1_shape, need_dx);
  } else {
    dx = conv1.backward(da, need_dx);
    if (has_adapters_) {
      const Tensor dxa = adapter1.backward(da, need_dx);
      if (need_dx) ops::add_inplace(dx, dxa);
    }
  }
  if (has_downsample_) {
    const Tensor dxd = down_conv.backward(down_bn.backward_through_relu(dy, y, /*need_dx=*/true), need_dx);
    if (need_dx) ops::add_inplace(dx, dxd);
  } else if (need_dx) {
    ops::add_inplace(dx, dsum);
  }
  return dx;
}

void BasicBlock::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
  invalidate_folded_weights();  // the entries can write the weights (loading a state dict)
  list_state_for_reading(prefix, out);
}

void BasicBlock::list_state_for_reading(const std::string& prefix, std::vector<StateEntry>& out) {
  conv1.list_state(prefix + "conv1.", out);
  bn1.list_state(prefix + "bn1.", out);
  conv2.list_state(prefix + "conv2.", out);
  bn2.list_state(prefix + "bn2.", out);
  if (has_downsample_) {
    down_conv.list_state(prefix + "downsample.0.", out);
    down_bn.list_state(prefix + "downsample.1.", out);
  }
  if (has_adapters_) {
    adapter1.list_state(prefix + "adapter1.", out);
    adapter2.list_state(prefix + "adapter2.", out);
  }
}

}  // namespace ae::model
