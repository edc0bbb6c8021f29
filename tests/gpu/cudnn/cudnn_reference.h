#pragma once
// cuDNN as the oracle of the real-GPU tests and the yardstick of bench_cuda_conv (DESIGN.md: cuDNN
// is never on the default path). Runs cuDNN's convolution and batch norm on aesthete's own device
// tensors, in aesthete's layouts: activations NHWC (CUDNN_TENSOR_NHWC), conv weights OHWI (a
// CUDNN_TENSOR_NHWC filter), float32, and FMA math only (CUDNN_FMA_MATH: no TF32 tensor cores), so
// both sides compute the same thing at the same precision. bench_cuda_conv's TF32 and BF16 rows
// construct a Conv with Precision::tf32 / Precision::bf16 instead (see Precision below); the
// oracle and batch norm stay float32 with FMA math.
//
// Built only into test and bench targets of a CUDA build that found cuDNN (target
// ae_cudnn_reference, which defines AE_HAVE_CUDNN); ae_cuda and the aesthete binary never link it.
// Every cuDNN status is checked: a failure is an ae::Error naming the statement, file, line and
// cuDNN's description.
#include <cudnn.h>

#include <cstddef>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "runtime/error.h"

#define AE_CUDNN_CHECK(stmt)                                                                               \
  do {                                                                                                     \
    const cudnnStatus_t ae_cudnn_status_ = (stmt);                                                         \
    if (ae_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                                                        \
      AE_FAIL("cuDNN call failed: " << #stmt << ": " << ::cudnnGetErrorString(ae_cudnn_status_) << " ("  \
                                    << static_cast<int>(ae_cudnn_status_) << ")");                        \
    }                                                                                                      \
  } while (0)

namespace ae::cudnn_ref {

// "cuDNN 9.19.0 (built against 9.19.0, cudart 13000)": what the library loaded at run time is.
std::string version_string();

// One cuDNN handle on the default stream (where aesthete's kernels run). Needs a usable GPU:
// call ae::cuda::initialize() first and construct this only when it reports one.
class Handle {
 public:
  Handle();
  ~Handle();
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  cudnnHandle_t get() const { return handle_; }

 private:
  cudnnHandle_t handle_ = nullptr;
};

enum class ConvPass { forward, backward_data, backward_weight };
const char* pass_name(ConvPass pass);  // "fwd", "dgrad", "wgrad"

// What a Conv's tensors hold and which math cuDNN may use (the compute type, i.e. accumulation, is
// float32 in every case: cudnnSetConvolution2dDescriptor(..., CUDNN_DATA_FLOAT)).
enum class Precision {
  // float32 tensors, CUDNN_FMA_MATH: CUDA-core FMAs only, never tensor cores (the default; the
  // oracle and the f32 rows of bench_cuda_conv).
  f32,
  // float32 tensors, CUDNN_DEFAULT_MATH (what PyTorch sets with cudnn.allow_tf32 = True): cuDNN may
  // read the operands as TF32 on tensor cores (Ampere and later; NVIDIA_TF32_OVERRIDE=0 in the
  // environment forbids it). No down-conversion to FP16: results whose math type is
  // CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION are never chosen.
  tf32,
  // bfloat16 tensors: x, w, y, dy, dx and dw are all CUDNN_DATA_BFLOAT16 (cuDNN's "pseudo-BF16"
  // configuration: BF16 in and out, float32 accumulation), CUDNN_TENSOR_OP_MATH (what PyTorch
  // sets for BF16). The tensors are made with to_bf16 / bf16_empty below.
  bf16,
};
const char* precision_name(Precision precision);  // "f32", "tf32", "bf16"

// BF16 tensors are DType::bf16. to_bf16: a float32 tensor (any device) rounded to bfloat16 by
// ops::cast (nearest-even, as our bf16 conv kernels round their operands), on the CUDA device.
// bf16_empty: an uninitialised one on the device. from_bf16: back to a float32 host tensor
// (exact: every bfloat16 is a float32).
Tensor to_bf16(const Tensor& f32);
Tensor bf16_empty(const Shape& shape);
Tensor from_bf16(const Tensor& bf16);

// How a Conv chooses cuDNN's algorithm for each pass.
enum class AlgoPolicy {
  // The oracle: the first algorithm cuDNN runs for this shape from a fixed list of direct
  // summations (implicit GEMM, GEMM, direct; never FFT or Winograd, whose rounding differs in kind).
  precise,
  // The yardstick: cudnnFind*AlgorithmEx measures every algorithm cuDNN offers at the Conv's
  // precision on the real buffers and the fastest one wins (what PyTorch does with
  // cudnn.benchmark = True), run with the math type cuDNN measured it with.
  fastest,
};

// One convolution shape (groups 1, dilation 1, cross-correlation as in PyTorch) with its cuDNN
// descriptors, chosen algorithms and a workspace large enough for all three passes.
class Conv {
 public:
  // With Precision::bf16 every tensor argument below is a BF16 tensor (to_bf16 / bf16_empty) of the
  // shape named; otherwise float32 on the device.
  Conv(Handle& handle, const ops::Conv2dParams& p, const Shape& x_shape, int64_t out_channels,
       Precision precision = Precision::f32);
  ~Conv();
  Conv(const Conv&) = delete;
  Conv& operator=(const Conv&) = delete;

  const Shape& x_shape() const { return x_shape_; }
  const Shape& w_shape() const { return w_shape_; }
  const Shape& y_shape() const { return y_shape_; }
  Precision precision() const { return precision_; }
  // 2 * N*OH*OW * O * KH*KW*C: the multiply-adds of each of the three passes, counted as 2 FLOP.
  double flops() const;

  // Picks the algorithm of every pass. `fastest` runs cuDNN's search on these buffers (it writes
  // y, dx and dw); workspace_limit caps the workspace an algorithm may ask for.
  void choose_algorithms(AlgoPolicy policy, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& y,
                         Tensor& dx, Tensor& dw, std::size_t workspace_limit = std::size_t{1} << 30);
  // The chosen algorithm's cuDNN name, e.g. "IMPLICIT_PRECOMP_GEMM"; "" before choose_algorithms.
  std::string algo_name(ConvPass pass) const;
  // The math type the chosen algorithm runs with: "fma", "default", "tensor_op" (or
  // "tensor_op_allow_conversion"); "" before choose_algorithms.
  std::string math_type_name(ConvPass pass) const;

  // y = conv(x, w); dx = conv_transpose(dy, w); dw = corr(x, dy). Outputs are preallocated device
  // tensors of y_shape / x_shape / w_shape and are overwritten (never read: beta = 0).
  void forward(const Tensor& x, const Tensor& w, Tensor& y);
  void backward_data(const Tensor& dy, const Tensor& w, Tensor& dx);
  void backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw);

 private:
  void check_operands(const char* pass, const Tensor& a, const Shape& a_shape, const Tensor& b,
                      const Shape& b_shape, const Tensor& out, const Shape& out_shape) const;
  void reserve_workspace(std::size_t bytes);
  void release_descriptors() noexcept;
  // Sets the convolution descriptor's math type to the one chosen for `pass` (one descriptor
  // serves all three passes, whose chosen math types may differ).
  void use_math_of(ConvPass pass);

  Handle& handle_;
  Precision precision_;
  Shape x_shape_, w_shape_, y_shape_;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnFilterDescriptor_t w_desc_ = nullptr;
  cudnnConvolutionDescriptor_t conv_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo_{};
  cudnnConvolutionBwdDataAlgo_t dgrad_algo_{};
  cudnnConvolutionBwdFilterAlgo_t wgrad_algo_{};
  cudnnMathType_t search_math_ = CUDNN_FMA_MATH;  // set on the descriptor for the search
  cudnnMathType_t fwd_math_ = CUDNN_FMA_MATH, dgrad_math_ = CUDNN_FMA_MATH, wgrad_math_ = CUDNN_FMA_MATH;
  bool chosen_ = false;
  Tensor workspace_;  // u8 on the device
};

// cuDNN batch norm, spatial mode (statistics per channel = last dim of NHWC x [N,H,W,C]), training
// mode, with the same meaning as ops::batchnorm_forward_train: y, the batch mean, 1/sqrt(biased
// var + eps), and the running statistics updated in place with factor p.momentum (cuDNN updates
// running_var with the unbiased variance, as PyTorch does).
ops::BatchNormTrainOut batchnorm_forward_train(Handle& handle, const ops::BatchNormParams& p, const Tensor& x,
                                               const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                               Tensor& running_var);
// Backward of training mode from the saved mean and inverse std of the forward pass.
ops::BatchNormGrads batchnorm_backward_train(Handle& handle, const ops::BatchNormParams& p, const Tensor& x,
                                             const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                                             const Tensor& save_invstd);

}  // namespace ae::cudnn_ref
