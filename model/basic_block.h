#pragma once
// torchvision's BasicBlock with optional parallel residual adapters (Rebuffi et al. 2018):
//   a   = conv1(x) [+ adapter1(x)]      adapter1: 1x1, same stride as conv1, no bias
//   out = relu(bn1(a))
//   c   = conv2(out) [+ adapter2(out)]  adapter2: 1x1, stride 1, no bias
//   y   = relu(bn2(c) + identity),      identity = downsample(x) (1x1 conv + BN) or x
// The block composes its own backward from its layers' backwards.
// Inference (eval mode, nothing kept for a backward) runs the fused ops of kernels/ops.h:
// conv1+bn1+ReLU, the downsample conv+BN and conv2+bn2+residual+ReLU each as one
// ops::conv2d_batchnorm (the BatchNorm applied as the convolution stores, or in one pass after it),
// the same float operations as the unfused layers, so the output is unchanged
// (tests/unit/test_fused_epilogue.cpp).
// With adapters, inference also folds each adapter into its 3x3 conv: the 3x3/pad-1 conv's centre
// tap reads exactly the input pixel the 1x1 adapter (same stride) reads, so
//   conv3x3(x; W) + conv1x1(x; A) == conv3x3(x; W')   with W'[o,1,1,i] = W[o,1,1,i] + A[o,0,0,i],
// one convolution instead of two plus an add. The sum order differs, so this agrees with the
// unfused path to float rounding, not bit for bit (tests/unit/test_adapter_fold.cpp).
#include <memory>
#include <string>
#include <vector>

#include "model/layers.h"

namespace ae::model {

class BasicBlock {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int stride, bool adapters);

  Tensor forward(const Tensor& x, bool training, bool keep);
  // need_dx = false only for the earliest block that still has trainable parameters when no
  // input gradient is wanted.
  Tensor backward(const Tensor& dy, bool need_dx);
  // Appends the state entries under `prefix` ("layer2.0.") in torchvision's order.
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);
  // The same entries without dropping the cached folded weights: for code that only reads them
  // (model/inference_graph.h compares their storages).
  void list_state_for_reading(const std::string& prefix, std::vector<StateEntry>& out);
  // Changes whenever a cached folded weight is built or dropped: a captured inference graph holds
  // the address of the fold it was captured with (model/inference_graph.h).
  uint64_t cache_generation() const { return cache_generation_; }

  bool has_downsample() const { return has_downsample_; }
  bool has_adapters() const { return has_adapters_; }

  // Off: inference runs the unfused layer-by-layer path (kept for comparing the two).
  bool fuse_inference_epilogues = true;
  // On (default): a training forward runs each convolution with its BatchNorm (+ residual) (+ ReLU)
  // as ops::conv2d_batchnorm_train: on the CPU the same ops in the same order (the same bits), on
  // CUDA the statistics come from the convolution's epilogue and BatchNorm, residual and ReLU take
  // one pass. A block with adapters takes this path when they fold (fold_adapters, below): the
  // convolution is then the one with the folded weight. Off: layer by layer (kept for comparing).
  bool fuse_training_epilogues = true;
  // Off: the adapters run as separate 1x1 convs + add everywhere (inference, and forwards that keep
  // activations for a backward).
  // On (default): inference uses the cached fold (below); a forward that keeps activations
  // (training, personalisation) folds each adapter into its 3x3 conv afresh (an optimiser steps the
  // weights in place between forwards, so nothing is cached; the fold is one device op,
  // ops::conv_fold_centre_tap) and the backward's data gradient uses the same folded weight: one
  // convolution each way instead of two plus an add, and in training the convolution's fused
  // BatchNorm epilogue (fuse_training_epilogues). The weight gradients are the unfolded ones (the
  // 1x1 adapter's gradient is the conv's centre-tap gradient, computed by its own 1x1 wgrad).
  bool fold_adapters = true;
  // How the fused epilogues (inference, training, the input-gradient forward) store their outputs,
  // the activations between layers: f32 (default) or bf16 (half the bytes written and read again;
  // ResNet18::set_activation_dtype). The convolutions, BatchNorm statistics and all gradients stay
  // f32; a bf16 input is convolved with the weight cast to bf16 (operand_weight). The layer-by-layer
  // path writes f32 whatever this says.
  DType activation_dtype = DType::f32;

  // Input-gradient pass (ResNet18::input_gradient; DESIGN.md "Input gradients"): an eval-mode
  // forward that keeps only the two ReLU outputs (their masks), then the input gradient alone. Each
  // eval BatchNorm is folded into its convolution for the backward: with s = gamma/sqrt(var + eps),
  //   d/dx conv(x; W) * s == conv_backward_data(dy, W * s)      (per output channel)
  // and the adapter into the 3x3 centre tap, so the backward is three data-gradient convolutions
  // and two ReLU masks, with no BatchNorm op, no parameter gradient and no reduction. Folding changes
  // the rounding only (tests/unit/test_input_gradient.cpp measures it against the layer backward).
  struct InputGradTape {
    Tensor out, y;  // relu(bn1(...)) and the block output
    Shape x_shape;
  };
  Tensor forward_for_input_grad(const Tensor& x, InputGradTape& tape);
  Tensor backward_input_grad(const Tensor& dy, const InputGradTape& tape);

  // Drops the cached folded weights. Every write to conv1/conv2/adapter weights made through the
  // model's own paths is noticed without this (see FoldedWeight); code that writes a weight's
  // elements in place by other means (raw pointers, ops on weight.value) must call it.
  void invalidate_folded_weights();

  Conv2d conv1, conv2, adapter1, adapter2, down_conv;
  BatchNorm bn1, bn2, down_bn;
  ReLU relu1;

 private:
  // conv3x3 with the adapter folded into its centre tap, cached. The cache is trusted only while
  // nothing can have changed the weights since it was built:
  // - assigning a new tensor to weight.value (load into a fresh model, to(device)) changes the
  //   storage / offset it was built from, which is compared on every use;
  // - loading a state dict writes in place through StateEntry pointers, which only list_state()
  //   hands out, so list_state() drops the cache;
  // - an optimiser only writes parameters that have a gradient: while either weight has one the
  //   fold is not used (the adapter runs as a separate conv, exactly as unfused) and the cache is
  //   dropped, and backward() (which creates gradients) drops it too.
  //   (Not caught: StateEntry pointers kept across an inference forward and written later, and
  //   in-place writes by other code; those need invalidate_folded_weights().)
  // Rebuilding on every forward instead costs a full copy of the 3x3 weight per call
  // (ops::conv_fold_centre_tap): measured on the CPU (when the fold still went through the host on
  // CUDA), a 512-ch 7x7 batch-1 block took 12 ms rebuilding vs 5.5 ms cached vs 7-8 ms with
  // separate adapters.
  // The cache costs one extra copy of conv1/conv2's weights per block with adapters.
  struct FoldedWeight {
    Tensor value;                    // W' [out, 3, 3, in], on the weights' device
    TensorIdentity conv, adapter;  // the weights W' was built from
    bool built_from(const Tensor& conv_w, const Tensor& adapter_w) const;
    void clear() { *this = FoldedWeight(); }
  };
  Tensor conv_with_adapter(Conv2d& conv, Conv2d& adapter, FoldedWeight& folded, const Tensor& x);
  // Whether inference may use the cached fold now (see FoldedWeight), and the fold, rebuilt when stale.
  bool fold_usable(const Conv2d& conv, const Conv2d& adapter) const;
  const Tensor& folded_weight(const Conv2d& conv, const Conv2d& adapter, FoldedWeight& folded);
  // conv(x) [+ adapter(x)], then bn, + residual, ReLU: one ops::conv2d_batchnorm where the adapter
  // folds (or there is none), the separate layers and the fused BatchNorm otherwise.
  Tensor conv_bn(Conv2d& conv, Conv2d& adapter, FoldedWeight& folded, const BatchNorm& bn, const Tensor& x,
                 const Tensor& residual, bool relu);

  Tensor forward_inference_fused(const Tensor& x);
  Tensor forward_training_fused(const Tensor& x, bool keep);  // see fuse_training_epilogues

  FoldedWeight folded1_, folded2_;

  // The training-time fold of one forward (see fold_adapters): the folded weights and the inputs
  // the weight gradients read (undefined when neither weight trains).
  struct TrainFold {
    bool active = false;
    Tensor w1, w2, x1, x2;
    Shape x1_shape, x2_shape;
  };
  TrainFold train_fold_;
  Tensor conv_folded_for_training(Conv2d& conv, Conv2d& adapter, const Tensor& x, Tensor& w_out, Tensor& x_kept,
                                  Shape& x_shape);
  Tensor backward_folded(Conv2d& conv, Conv2d& adapter, const Tensor& dy, const Tensor& w, const Tensor& x,
                         const Shape& x_shape, bool need_dx);
  // conv(x) with the adapter folded, + its training BatchNorm (+ residual) (+ ReLU) as one
  // ops::conv2d_batchnorm_train; records the fold for the backward like conv_folded_for_training.
  Tensor conv_bn_train_folded(Conv2d& conv, Conv2d& adapter, BatchNorm& bn, const Tensor& x, const Tensor& residual,
                              bool relu, bool keep, Tensor& w_out, Tensor& x_kept, Shape& x_shape);

  // Backward weights of the input-gradient pass (BatchNorm scale folded in), cached like
  // FoldedWeight: valid while every source tensor is the same storage at the same offset.
  struct BackwardFold {
    Tensor w1, w2, wd;
    std::vector<TensorIdentity> sources;  // backward_fold_sources() when it was built
  };
  std::vector<const Tensor*> backward_fold_sources();
  bool backward_fold_valid();
  BackwardFold backward_fold_;

  bool has_downsample_ = false;
  bool has_adapters_ = false;
  uint64_t cache_generation_ = 0;
  Tensor y_;  // the block output, for the final ReLU's backward
};

}  // namespace ae::model
