#pragma once
// ResNet-18 exactly as torchvision defines it (names, shapes, any input size), with the heads
// and residual adapters of DESIGN.md "Model". Input NHWC [N,H,W,3], output [N,1] for the
// `seed` and `linear` heads ([N,1000] logits for a plain torchvision classifier, head `imagenet`).
//
// Forward/backward are explicit: forward keeps activations while grad is enabled, backward
// walks the layers in reverse, writes gradients next to the parameters (Param::grad) for
// trainable groups only, and stops at the earliest layer that still needs a gradient unless the
// input gradient is asked for.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/basic_block.h"
#include "model/layers.h"
#include "model/model_layout.h"

namespace ae::model {

// A parameter as optimisers see it.
struct ParamRef {
  std::string name;  // PyTorch name ("layer1.0.conv1.weight")
  Param* param;
};

// The activation storage new models start with (ResNet18::set_activation_dtype): f32 unless the
// process asked for bf16 (the CLI's --activations, session::set_activations). Process-wide, like the
// conv math (kernels/cuda/conv_math.h), because every command builds its models its own way.
void set_default_activation_dtype(DType dtype);
DType default_activation_dtype();
// "f32" / "bf16" -> DType; anything else throws ae::Error naming `where` and the accepted values.
DType parse_activation_dtype(const std::string& text, const std::string& where);

class ResNet18 {
 public:
  // Default initialisation (deterministic from config.seed): torchvision's for the backbone
  // (Kaiming-normal fan_out convs, BN gamma 1 beta 0, fc uniform(+-1/sqrt(in))), PyTorch's
  // defaults for the head (Linear uniform(+-1/sqrt(in)), PReLU 0.25), adapters zero.
  explicit ResNet18(const ModelConfig& config);
  ResNet18(const ResNet18&) = delete;
  ResNet18& operator=(const ResNet18&) = delete;

  const ModelConfig& config() const { return config_; }

  Tensor forward(const Tensor& x);
  // dout has the output's shape. Returns the input gradient when need_input_grad, else an
  // undefined tensor. Gradients accumulate until zero_grad().
  Tensor backward(const Tensor& dout, bool need_input_grad = false);

  // The input-gradient pass (saliency, enhancement; DESIGN.md "Input gradients"): an eval-mode
  // forward and the gradient of sum(score * dscore) with respect to the input alone. No parameter
  // gradient is computed or touched whatever the trainable flags say (they are not changed), no
  // BatchNorm reduction runs (eval BatchNorms are folded into the convolutions' backward weights,
  // see BasicBlock), and only what the input gradient reads is kept (ReLU outputs, pooling
  // indices), for the duration of the call. `dscore` has the score's shape ([N,1]); undefined means
  // all ones. The score equals forward() in eval mode without grad (the inference path).
  struct InputGradient {
    Tensor score;  // [N,1] (or [N,1000] for the imagenet head)
    Tensor dx;     // the input's shape
  };
  InputGradient input_gradient(const Tensor& x, const Tensor& dscore = Tensor());

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }
  // On: in training mode the backbone's BatchNorm layers (stem and blocks) still normalise with
  // their running statistics and leave them unchanged, while the head trains as usual. This is
  // the `head` personalisation mode's policy: a frozen backbone stays exactly the generic one
  // (the original let a few user images overwrite its running statistics).
  void set_backbone_batchnorm_eval(bool on) { backbone_bn_eval_ = on; }
  bool backbone_batchnorm_eval() const { return backbone_bn_eval_; }
  // Off: training forwards run each convolution, BatchNorm and ReLU as separate layers instead of
  // ops::conv2d_batchnorm_train (stem and every block without adapters; see
  // BasicBlock::fuse_training_epilogues). For comparing the two.
  void set_fuse_training_epilogues(bool on);
  // How the activations between layers are stored on the fused paths (stem and blocks; inference,
  // training and input gradients): f32, or bf16 (BasicBlock::activation_dtype says what changes).
  // Starts as default_activation_dtype(). Any device; only CUDA in bf16 conv math reads bf16
  // activations without widening them (kernels/cuda/conv_implicit_gemm.h, "bf16 storage").
  void set_activation_dtype(DType dtype);
  DType activation_dtype() const { return activation_dtype_; }
  // With grad disabled, forward keeps nothing (inference) and backward is an error.
  void set_grad_enabled(bool on) { grad_enabled_ = on; }
  bool grad_enabled() const { return grad_enabled_; }

  void set_trainable(ParamGroup group, bool on);
  bool trainable(ParamGroup group) const;
  void zero_grad();

  // Every parameter (frozen ones too) in state_dict order, and the trainable subset.
  std::vector<ParamRef> parameters();
  std::vector<ParamRef> trainable_parameters();
  int64_t parameter_count(ParamGroup group);

  // Every state entry (parameters, running statistics, counters) in torchvision's order.
  std::vector<StateEntry> state_entries();
  // The same, without dropping the blocks' cached folded weights: only to read the tensors.
  std::vector<StateEntry> state_entries_for_reading();
  // Every parameter's value and every buffer (not the host counters), in state-dict order: the
  // device memory a captured graph reads and writes.
  std::vector<const Tensor*> state_tensors();
  // Sum of the blocks' cache generations (BasicBlock::cache_generation).
  uint64_t inference_cache_generation() const;
  // The blocks' inference switches (BasicBlock::fuse_inference_epilogues, fold_adapters) and the
  // activation storage (bit 63: bf16), as bits.
  uint64_t inference_switches() const;
  // PyTorch names and layouts (conv weights OIHW), CPU copies; num_batches_tracked as i64 [].
  NamedTensors state_dict();
  // Loads PyTorch-layout tensors by name. Shapes must match exactly; names the model has
  // but `tensors` lacks are an error unless their part is allowed to be missing (they keep
  // their current values); names the model does not have are always an error.
  // num_batches_tracked may be absent (old torchvision files) and then counts from 0.
  void load_state_dict(const NamedTensors& tensors, const LoadOptions& options = {});

  // Gradients of trainable parameters that have one, in PyTorch layout (tests, debugging).
  NamedTensors grads_pytorch_layout();

  // Moves parameters, buffers and gradients to `device`.
  void to(Device device);
  Device device() const;

  // Dropout's random stream: seed derived from config.seed and the layer, offset from this
  // counter, which every training-mode forward advances. Save and restore it to replay a run.
  uint64_t dropout_step() const { return dropout_step_; }
  void set_dropout_step(uint64_t step) { dropout_step_ = step; }
  // Data-parallel training: this process's batch holds rows first_row.. of the step's global
  // batch, so dropout draws for them the masks one process draws for those rows (0 alone).
  void set_dropout_first_row(int64_t first_row) { dropout_first_row_ = first_row; }
  // The part of the dropout stream offset that moves per step: every training forward's masks
  // start 2^32 further on.
  static int64_t dropout_step_offset(uint64_t step) { return static_cast<int64_t>(step << 32); }
  // A captured training step (train/train_graph.h) cannot pass that offset as a kernel argument
  // (the capture would freeze it). With `step_offset` defined (i64 [1] on the model's device) the
  // head's dropout reads it from there when it runs; the caller writes dropout_step_offset(step)
  // into it before each replay. Undefined (the default): the offset is an argument.
  void set_dropout_device_offset(Tensor step_offset) { dropout_device_offset_ = std::move(step_offset); }

 private:
  void initialise();
  std::vector<StateEntry> collect_state(bool for_reading);
  Tensor head_forward(const Tensor& features, bool keep);
  Tensor head_backward(const Tensor& dy, bool need_dx);
  // Index of the earliest stage (0 = stem, 1..8 = blocks, 9 = classifier) that still needs a
  // gradient; 10 when nothing before the head does.
  int first_stage_needing_grad(bool need_input_grad) const;

  ModelConfig config_;
  bool training_ = false;
  bool backbone_bn_eval_ = false;
  bool fuse_training_epilogues_ = true;
  DType activation_dtype_ = DType::f32;
  bool grad_enabled_ = true;
  uint64_t dropout_step_ = 0;
  int64_t dropout_first_row_ = 0;
  Tensor dropout_device_offset_;
  bool kept_ = false;

  // Stem.
  Conv2d conv1_;
  BatchNorm bn1_;
  ReLU relu_;
  MaxPool2d maxpool_;
  // layer1..layer4, two blocks each.
  std::vector<std::unique_ptr<BasicBlock>> blocks_;
  GlobalAvgPool avgpool_;
  Linear fc_;
  // Seed head: Linear(1000,256) PReLU Dropout BN1d Linear(256,256) PReLU Dropout BN1d Linear(256,1).
  Linear head0_, head4_, head8_;
  PReLU head1_, head5_;
  Dropout head2_, head6_;
  BatchNorm head3_, head7_;
};

}  // namespace ae::model
