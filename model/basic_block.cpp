#include "model/basic_block.h"

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

// Eval-mode batch norm of `bn` on x, then + residual (when defined), then ReLU, in one op.
Tensor bn_epilogue(const BatchNorm& bn, const Tensor& x, const Tensor& residual, bool relu) {
  ops::BatchNormApplyParams p;
  p.eps = bn.params.eps;
  p.stats = ops::BatchNormStats::running;
  p.relu = relu;
  return ops::batchnorm_apply(p, x, bn.weight.value, bn.bias.value, bn.running_mean, bn.running_var, residual);
}

}  // namespace

Tensor BasicBlock::forward_inference_fused(const Tensor& x) {
  Tensor a = conv1.forward(x, /*keep=*/false);
  if (has_adapters_) ops::add_inplace(a, adapter1.forward(x, false));
  const Tensor out = bn_epilogue(bn1, a, Tensor(), /*relu=*/true);
  Tensor c = conv2.forward(out, false);
  if (has_adapters_) ops::add_inplace(c, adapter2.forward(out, false));
  const Tensor identity =
      has_downsample_ ? bn_epilogue(down_bn, down_conv.forward(x, false), Tensor(), /*relu=*/false) : x;
  y_ = Tensor();  // nothing kept: a backward after an inference forward is an error
  return bn_epilogue(bn2, c, identity, /*relu=*/true);
}

Tensor BasicBlock::forward(const Tensor& x, bool training, bool keep) {
  if (!training && !keep && fuse_inference_epilogues) return forward_inference_fused(x);
  Tensor a = conv1.forward(x, keep);
  if (has_adapters_) ops::add_inplace(a, adapter1.forward(x, keep));
  const Tensor out = relu1.forward(bn1.forward(a, training, keep), keep);
  Tensor c = conv2.forward(out, keep);
  if (has_adapters_) ops::add_inplace(c, adapter2.forward(out, keep));
  const Tensor identity = has_downsample_ ? down_bn.forward(down_conv.forward(x, keep), training, keep) : x;
  Tensor y = ops::add_relu(bn2.forward(c, training, keep), identity);
  y_ = keep ? y : Tensor();
  return y;
}

Tensor BasicBlock::backward(const Tensor& dy, bool need_dx) {
  AE_CHECK(y_.defined(), "BasicBlock.backward: no activations kept; call forward with keep=true first");
  // relu(bn2(c) + identity): both branches receive the same gradient.
  const Tensor dsum = ops::relu_backward(y_, dy);
  y_ = Tensor();

  const Tensor dc = bn2.backward(dsum, /*need_dx=*/true);
  Tensor dout = conv2.backward(dc, /*need_dx=*/true);
  if (has_adapters_) ops::add_inplace(dout, adapter2.backward(dc, /*need_dx=*/true));
  const Tensor da = bn1.backward(relu1.backward(dout, /*need_dx=*/true), /*need_dx=*/true);
  Tensor dx = conv1.backward(da, need_dx);
  if (has_adapters_) {
    const Tensor dxa = adapter1.backward(da, need_dx);
    if (need_dx) ops::add_inplace(dx, dxa);
  }
  if (has_downsample_) {
    const Tensor dxd = down_conv.backward(down_bn.backward(dsum, /*need_dx=*/true), need_dx);
    if (need_dx) ops::add_inplace(dx, dxd);
  } else if (need_dx) {
    ops::add_inplace(dx, dsum);
  }
  return dx;
}

void BasicBlock::list_state(const std::string& prefix, std::vector<StateEntry>& out) {
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
