// cuDNN's convolution and batch norm on aesthete's device tensors (see cudnn_reference.h).
// Uses cuDNN's legacy (descriptor) API, which cuDNN 9 still ships in libcudnn_cnn / libcudnn_ops.
#include "tests/gpu/cudnn/cudnn_reference.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <sstream>

namespace ae::cudnn_ref {
namespace {

int to_int(int64_t v, const char* what) {
  AE_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(),
           "cuDNN reference: " << what << " = " << v << " does not fit cuDNN's int descriptors");
  return static_cast<int>(v);
}

// cuDNN names of the algorithm enums, indexed by value.
const char* const kFwdNames[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                 "FFT",           "FFT_TILING",            "WINOGRAD", "WINOGRAD_NONFUSED"};
const char* const kDgradNames[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
const char* const kWgradNames[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED",
                                   "FFT_TILING"};
static_assert(std::size(kFwdNames) == CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
static_assert(std::size(kDgradNames) == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
static_assert(std::size(kWgradNames) == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);

template <std::size_t N>
const char* name_of(const char* const (&names)[N], int algo) {
  return algo >= 0 && static_cast<std::size_t>(algo) < N ? names[algo] : "UNKNOWN";
}

// Direct summations only, in order of preference (see AlgoPolicy::precise).
const cudnnConvolutionFwdAlgo_t kPreciseFwd[] = {
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT};
const cudnnConvolutionBwdDataAlgo_t kPreciseDgrad[] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_0};
const cudnnConvolutionBwdFilterAlgo_t kPreciseWgrad[] = {
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3};

bool not_supported(cudnnStatus_t st) { return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED; }

// AlgoPolicy::precise: the first candidate whose workspace fits the limit and that cuDNN runs on
// the real buffers (`run` executes it once). An unsupported candidate is skipped; any other error
// is thrown. When none runs, the error lists why each candidate was refused.
template <typename Algo, std::size_t N, std::size_t M, typename WorkspaceSize, typename Run>
Algo first_that_runs(const Algo (&candidates)[N], const char* const (&names)[M], std::size_t workspace_limit,
                     const std::string& what, WorkspaceSize workspace_size, Run run) {
  std::ostringstream refused;
  for (const Algo algo : candidates) {
    const char* name = name_of(names, static_cast<int>(algo));
    std::size_t bytes = 0;
    cudnnStatus_t st = workspace_size(algo, &bytes);
    if (st == CUDNN_STATUS_SUCCESS && bytes > workspace_limit) {
      refused << "\n  " << name << ": needs " << bytes << " bytes of workspace, over the limit " << workspace_limit;
      continue;
    }
    if (st == CUDNN_STATUS_SUCCESS) st = run(algo, bytes);
    if (st == CUDNN_STATUS_SUCCESS) return algo;
    if (!not_supported(st)) {
      AE_FAIL("cuDNN reference conv " << what << ": algorithm " << name << " failed: " << cudnnGetErrorString(st)
                                      << " (" << static_cast<int>(st) << ")");
    }
    refused << "\n  " << name << ": " << cudnnGetErrorString(st) << " (" << static_cast<int>(st) << ")";
  }
  AE_FAIL("cuDNN reference conv " << what << ": no direct-summation algorithm runs (NHWC, at the Conv's "
                                  << "precision):" << refused.str());
}

bool uses_tensor_cores(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

const char* math_type_str(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor_op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor_op_allow_conversion";
    case CUDNN_FMA_MATH: return "fma";
  }
  return "unknown";
}

// Whether a search result's math type keeps the Conv's precision: f32 never uses tensor cores
// (so no TF32); tf32 and bf16 may, but never with ALLOW_CONVERSION (a down-conversion to FP16 that
// neither our kernels nor the precision's name promise).
bool math_allowed(Precision precision, cudnnMathType_t m) {
  switch (precision) {
    case Precision::f32: return !uses_tensor_cores(m);
    case Precision::tf32:
    case Precision::bf16: return m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
  }
  return false;
}

// The fastest result cuDNN's search measured that ran, at an allowed math type, within the workspace.
template <typename Perf>
const Perf* fastest_allowed(Precision precision, const Perf* results, int count) {
  for (int i = 0; i < count; ++i) {  // cuDNN returns them sorted by time
    if (results[i].status == CUDNN_STATUS_SUCCESS && math_allowed(precision, results[i].mathType)) return &results[i];
  }
  return nullptr;
}

cudnnDataType_t tensor_data_type(Precision precision) {
  return precision == Precision::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

// The math type set on the descriptor for the search (and for every pass of AlgoPolicy::precise):
// PyTorch's choice for the same precision (aten/src/ATen/cudnn/Descriptors.h).
cudnnMathType_t search_math_type(Precision precision) {
  switch (precision) {
    case Precision::f32: return CUDNN_FMA_MATH;
    case Precision::tf32: return CUDNN_DEFAULT_MATH;
    case Precision::bf16: return CUDNN_TENSOR_OP_MATH;
  }
  return CUDNN_FMA_MATH;
}

template <typename Perf>
std::string describe_search(const Perf* results, int count, const char* const* names, std::size_t n_names) {
  std::ostringstream os;
  for (int i = 0; i < count; ++i) {
    const int a = static_cast<int>(results[i].algo);
    os << "\n  " << (a >= 0 && static_cast<std::size_t>(a) < n_names ? names[a] : "UNKNOWN") << ": "
       << cudnnGetErrorString(results[i].status) << ", math type " << static_cast<int>(results[i].mathType)
       << ", workspace " << results[i].memory << " bytes";
  }
  return os.str();
}

void check_device_f32(const char* op, const char* arg, const Tensor& t, const Shape& shape) {
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined");
  AE_CHECK(t.device().is_cuda(), op << ": " << arg << " " << t.desc() << " must be on the CUDA device");
  AE_CHECK(t.dtype() == DType::f32, op << ": " << arg << " " << t.desc() << " must be f32");
  AE_CHECK(t.shape() == shape, op << ": " << arg << " is " << t.desc() << ", expected " << shape_str(shape));
}

void check_device_bf16(const char* op, const char* arg, const Tensor& t, const Shape& shape) {
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined");
  AE_CHECK(t.device().is_cuda(), op << ": " << arg << " " << t.desc() << " must be on the CUDA device");
  AE_CHECK(t.dtype() == DType::bf16 && t.shape() == shape,
           op << ": " << arg << " is " << t.desc() << ", expected a bf16 tensor of shape " << shape_str(shape));
}

// NHWC activation descriptor for [N,H,W,C] (or [M,C], seen as [M,1,1,C]).
cudnnTensorDescriptor_t nhwc_descriptor(const Shape& s, cudnnDataType_t type = CUDNN_DATA_FLOAT) {
  AE_CHECK(s.size() == 4 || s.size() == 2, "cuDNN reference: activations must be [N,H,W,C] or [N,C], got "
                                               << shape_str(s));
  const int64_t h = s.size() == 4 ? s[1] : 1, w = s.size() == 4 ? s[2] : 1;
  cudnnTensorDescriptor_t d = nullptr;
  AE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
  const cudnnStatus_t st = cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NHWC, type, to_int(s[0], "N"),
                                                      to_int(s.back(), "C"), to_int(h, "H"), to_int(w, "W"));
  if (st != CUDNN_STATUS_SUCCESS) cudnnDestroyTensorDescriptor(d);
  AE_CUDNN_CHECK(st);
  return d;
}

// Destroys a tensor descriptor when it goes out of scope (batch norm's short-lived ones).
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  explicit TensorDesc(cudnnTensorDescriptor_t desc) : d(desc) {}
  ~TensorDesc() {
    if (d) cudnnDestroyTensorDescriptor(d);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

// The [C] parameter/statistics descriptor cuDNN derives for spatial batch norm over x_desc.
cudnnTensorDescriptor_t bn_parameter_descriptor(cudnnTensorDescriptor_t x_desc) {
  cudnnTensorDescriptor_t d = nullptr;
  AE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
  const cudnnStatus_t st = cudnnDeriveBNTensorDescriptor(d, x_desc, CUDNN_BATCHNORM_SPATIAL);
  if (st != CUDNN_STATUS_SUCCESS) cudnnDestroyTensorDescriptor(d);
  AE_CUDNN_CHECK(st);
  return d;
}

}  // namespace

std::string version_string() {
  const std::size_t v = cudnnGetVersion();
  std::ostringstream os;
  os << "cuDNN " << v / 10000 << "." << v / 100 % 100 << "." << v % 100 << " (built against " << CUDNN_MAJOR
     << "." << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << ", cuDNN's cudart " << cudnnGetCudartVersion() << ")";
  return os.str();
}

Handle::Handle() {
  const cudnnStatus_t st = cudnnCreate(&handle_);
  AE_CHECK(st == CUDNN_STATUS_SUCCESS,
           "cuDNN call failed: cudnnCreate(&handle_): " << cudnnGetErrorString(st) << " (" << static_cast<int>(st)
                                                        << "); " << version_string()
                                                        << ". Hint: cuDNN needs a GPU, a driver new enough for "
                                                           "its CUDA version, and its sub-libraries "
                                                           "(libcudnn_cnn, libcudnn_ops) next to libcudnn.so.9");
}

Handle::~Handle() {
  if (handle_) cudnnDestroy(handle_);
}

const char* pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::forward: return "fwd";
    case ConvPass::backward_data: return "dgrad";
    case ConvPass::backward_weight: return "wgrad";
  }
  return "?";
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::f32: return "f32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Tensor to_bf16(const Tensor& f32) {
  AE_CHECK(f32.defined() && f32.dtype() == DType::f32, "cudnn_ref::to_bf16: needs an f32 tensor, got "
                                                           << (f32.defined() ? f32.desc() : std::string("undefined")));
  return ops::cast(f32.to(Device::cuda(0)), DType::bf16);
}

Tensor bf16_empty(const Shape& shape) { return Tensor::empty(shape, DType::bf16, Device::cuda(0)); }

Tensor from_bf16(const Tensor& bf16) {
  AE_CHECK(bf16.defined() && bf16.dtype() == DType::bf16, "cudnn_ref::from_bf16: needs a bf16 tensor, got "
                                                              << (bf16.defined() ? bf16.desc() : std::string("undefined")));
  return ops::cast(bf16, DType::f32).to(Device::cpu());
}

Conv::Conv(Handle& handle, const ops::Conv2dParams& p, const Shape& x_shape, int64_t out_channels,
           Precision precision)
    : handle_(handle), precision_(precision), x_shape_(x_shape) {
  AE_CHECK(x_shape.size() == 4, "cuDNN reference conv: x must be [N,H,W,C], got " << shape_str(x_shape));
  AE_CHECK(out_channels > 0, "cuDNN reference conv: out_channels must be positive, got " << out_channels);
  const int64_t oh = p.out_h(x_shape[1]), ow = p.out_w(x_shape[2]);
  AE_CHECK(oh > 0 && ow > 0, "cuDNN reference conv: kernel " << p.kernel_h << "x" << p.kernel_w
                                                             << " does not fit input " << shape_str(x_shape));
  w_shape_ = {out_channels, p.kernel_h, p.kernel_w, x_shape[3]};
  y_shape_ = {x_shape[0], oh, ow, out_channels};
  try {
    const cudnnDataType_t type = tensor_data_type(precision_);
    x_desc_ = nhwc_descriptor(x_shape_, type);
    y_desc_ = nhwc_descriptor(y_shape_, type);
    AE_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_desc_));
    // A CUDNN_TENSOR_NHWC filter of dims (K, C, H, W) is laid out K, H, W, C: our OHWI.
    AE_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc_, type, CUDNN_TENSOR_NHWC,
                                              to_int(out_channels, "O"), to_int(x_shape[3], "C"),
                                              p.kernel_h, p.kernel_w));
    AE_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc_));
    // Compute type float32 in every precision (BF16 tensors accumulate in float32 too).
    AE_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc_, p.pad_h, p.pad_w, p.stride_h, p.stride_w, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // f32: FMA math, plain float32 on CUDA cores, never TF32 tensor cores (the precision of our f32
    // kernels). tf32 / bf16: see search_math_type.
    search_math_ = search_math_type(precision_);
    fwd_math_ = dgrad_math_ = wgrad_math_ = search_math_;
    AE_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_, search_math_));
    int n = 0, c = 0, h = 0, w = 0;
    AE_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv_desc_, x_desc_, w_desc_, &n, &c, &h, &w));
    AE_CHECK(n == y_shape_[0] && c == y_shape_[3] && h == oh && w == ow,
             "cuDNN reference conv: cuDNN's output dims (N " << n << ", C " << c << ", H " << h << ", W " << w
                                                             << ") differ from ops::Conv2dParams' "
                                                             << shape_str(y_shape_));
  } catch (...) {
    release_descriptors();  // the constructor did not finish, so the destructor will not run
    throw;
  }
}

Conv::~Conv() { release_descriptors(); }

void Conv::release_descriptors() noexcept {
  if (conv_desc_) cudnnDestroyConvolutionDescriptor(conv_desc_);
  if (w_desc_) cudnnDestroyFilterDescriptor(w_desc_);
  if (y_desc_) cudnnDestroyTensorDescriptor(y_desc_);
  if (x_desc_) cudnnDestroyTensorDescriptor(x_desc_);
  conv_desc_ = nullptr;
  w_desc_ = nullptr;
  x_desc_ = y_desc_ = nullptr;
}

double Conv::flops() const {
  return 2.0 * static_cast<double>(shape_numel(y_shape_)) * static_cast<double>(w_shape_[1] * w_shape_[2] * w_shape_[3]);
}

void Conv::check_operands(const char* pass, const Tensor& a, const Shape& a_shape, const Tensor& b,
                          const Shape& b_shape, const Tensor& out, const Shape& out_shape) const {
  const auto check = precision_ == Precision::bf16 ? check_device_bf16 : check_device_f32;
  check(pass, "first input", a, a_shape);
  check(pass, "second input", b, b_shape);
  check(pass, "output", out, out_shape);
}

void Conv::use_math_of(ConvPass pass) {
  const cudnnMathType_t m = pass == ConvPass::forward         ? fwd_math_
                            : pass == ConvPass::backward_data ? dgrad_math_
                                                              : wgrad_math_;
  AE_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_, m));
}

void Conv::reserve_workspace(std::size_t bytes) {
  if (workspace_.defined() && workspace_.nbytes() >= bytes) return;
  workspace_ = Tensor();  // free the old one before asking for a larger one
  workspace_ = Tensor::empty({static_cast<int64_t>(std::max<std::size_t>(bytes, 1))}, DType::u8, Device::cuda(0));
}

void Conv::choose_algorithms(AlgoPolicy policy, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& y,
                             Tensor& dx, Tensor& dw, std::size_t workspace_limit) {
  check_operands("cuDNN conv choose_algorithms", x, x_shape_, w, w_shape_, y, y_shape_);
  check_operands("cuDNN conv choose_algorithms", dy, y_shape_, dx, x_shape_, dw, w_shape_);
  cudnnHandle_t h = handle_.get();
  const float one = 1.0f, zero = 0.0f;
  AE_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_, search_math_));
  fwd_math_ = dgrad_math_ = wgrad_math_ = search_math_;

  if (policy == AlgoPolicy::precise) {
    const std::string shape = "x " + shape_str(x_shape_) + " w " + shape_str(w_shape_);
    fwd_algo_ = first_that_runs(
        kPreciseFwd, kFwdNames, workspace_limit, "forward " + shape,
        [&](auto algo, std::size_t* bytes) {
          return cudnnGetConvolutionForwardWorkspaceSize(h, x_desc_, w_desc_, conv_desc_, y_desc_, algo, bytes);
        },
        [&](auto algo, std::size_t bytes) {
          reserve_workspace(bytes);
          return cudnnConvolutionForward(h, &one, x_desc_, x.raw(), w_desc_, w.raw(), conv_desc_, algo,
                                         workspace_.raw(), bytes, &zero, y_desc_, y.raw());
        });
    dgrad_algo_ = first_that_runs(
        kPreciseDgrad, kDgradNames, workspace_limit, "backward-data " + shape,
        [&](auto algo, std::size_t* bytes) {
          return cudnnGetConvolutionBackwardDataWorkspaceSize(h, w_desc_, y_desc_, conv_desc_, x_desc_, algo, bytes);
        },
        [&](auto algo, std::size_t bytes) {
          reserve_workspace(bytes);
          return cudnnConvolutionBackwardData(h, &one, w_desc_, w.raw(), y_desc_, dy.raw(), conv_desc_, algo,
                                              workspace_.raw(), bytes, &zero, x_desc_, dx.raw());
        });
    wgrad_algo_ = first_that_runs(
        kPreciseWgrad, kWgradNames, workspace_limit, "backward-weight " + shape,
        [&](auto algo, std::size_t* bytes) {
          return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x_desc_, y_desc_, conv_desc_, w_desc_, algo, bytes);
        },
        [&](auto algo, std::size_t bytes) {
          reserve_workspace(bytes);
          return cudnnConvolutionBackwardFilter(h, &one, x_desc_, x.raw(), y_desc_, dy.raw(), conv_desc_, algo,
                                                workspace_.raw(), bytes, &zero, w_desc_, dw.raw());
        });
  } else {
    // cuDNN's own search, on one workspace as large as the limit allows.
    reserve_workspace(workspace_limit);
    const std::size_t ws = workspace_.nbytes();
    int returned = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    AE_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, x_desc_, x.raw(), w_desc_, w.raw(), conv_desc_,
                                                          y_desc_, y.raw(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                          &returned, fwd, workspace_.raw(), ws));
    const auto* best_fwd = fastest_allowed(precision_, fwd, returned);
    AE_CHECK(best_fwd, "cuDNN reference conv: cuDNN's forward search found no " << precision_name(precision_)
                             << " algorithm for x "
                           << shape_str(x_shape_) << " w " << shape_str(w_shape_) << ":"
                           << describe_search(fwd, returned, kFwdNames, std::size(kFwdNames)));
    fwd_algo_ = best_fwd->algo;
    fwd_math_ = best_fwd->mathType;

    cudnnConvolutionBwdDataAlgoPerf_t dgrad[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    AE_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, w_desc_, w.raw(), y_desc_, dy.raw(), conv_desc_,
                                                               x_desc_, dx.raw(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                               &returned, dgrad, workspace_.raw(), ws));
    const auto* best_dgrad = fastest_allowed(precision_, dgrad, returned);
    AE_CHECK(best_dgrad, "cuDNN reference conv: cuDNN's backward-data search found no " << precision_name(precision_)
                             << " algorithm for x "
                             << shape_str(x_shape_) << " w " << shape_str(w_shape_) << ":"
                             << describe_search(dgrad, returned, kDgradNames, std::size(kDgradNames)));
    dgrad_algo_ = best_dgrad->algo;
    dgrad_math_ = best_dgrad->mathType;

    cudnnConvolutionBwdFilterAlgoPerf_t wgrad[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    AE_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        h, x_desc_, x.raw(), y_desc_, dy.raw(), conv_desc_, w_desc_, dw.raw(),
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, wgrad, workspace_.raw(), ws));
    const auto* best_wgrad = fastest_allowed(precision_, wgrad, returned);
    AE_CHECK(best_wgrad, "cuDNN reference conv: cuDNN's backward-weight search found no " << precision_name(precision_)
                             << " algorithm for x "
                             << shape_str(x_shape_) << " w " << shape_str(w_shape_) << ":"
                             << describe_search(wgrad, returned, kWgradNames, std::size(kWgradNames)));
    wgrad_algo_ = best_wgrad->algo;
    wgrad_math_ = best_wgrad->mathType;
  }

  // One workspace for all three chosen algorithms, sized by cuDNN's own query.
  // (at each pass's chosen math type, which the workspace may depend on).
  std::size_t fwd_bytes = 0, dgrad_bytes = 0, wgrad_bytes = 0;
  use_math_of(ConvPass::forward);
  AE_CUDNN_CHECK(
      cudnnGetConvolutionForwardWorkspaceSize(h, x_desc_, w_desc_, conv_desc_, y_desc_, fwd_algo_, &fwd_bytes));
  use_math_of(ConvPass::backward_data);
  AE_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, w_desc_, y_desc_, conv_desc_, x_desc_, dgrad_algo_,
                                                              &dgrad_bytes));
  use_math_of(ConvPass::backward_weight);
  AE_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x_desc_, y_desc_, conv_desc_, w_desc_,
                                                                wgrad_algo_, &wgrad_bytes));
  const std::size_t need = std::max({fwd_bytes, dgrad_bytes, wgrad_bytes});
  if (!workspace_.defined() || workspace_.nbytes() < need || workspace_.nbytes() > 2 * need + (1u << 20)) {
    workspace_ = Tensor();
    reserve_workspace(need);
  }
  chosen_ = true;
}

std::string Conv::algo_name(ConvPass pass) const {
  if (!chosen_) return "";
  switch (pass) {
    case ConvPass::forward: return name_of(kFwdNames, static_cast<int>(fwd_algo_));
    case ConvPass::backward_data: return name_of(kDgradNames, static_cast<int>(dgrad_algo_));
    case ConvPass::backward_weight: return name_of(kWgradNames, static_cast<int>(wgrad_algo_));
  }
  return "";
}

std::string Conv::math_type_name(ConvPass pass) const {
  if (!chosen_) return "";
  switch (pass) {
    case ConvPass::forward: return math_type_str(fwd_math_);
    case ConvPass::backward_data: return math_type_str(dgrad_math_);
    case ConvPass::backward_weight: return math_type_str(wgrad_math_);
  }
  return "";
}

void Conv::forward(const Tensor& x, const Tensor& w, Tensor& y) {
  AE_CHECK(chosen_, "cuDNN reference conv: call choose_algorithms before forward");
  check_operands("cuDNN conv forward", x, x_shape_, w, w_shape_, y, y_shape_);
  const float one = 1.0f, zero = 0.0f;
  use_math_of(ConvPass::forward);
  AE_CUDNN_CHECK(cudnnConvolutionForward(handle_.get(), &one, x_desc_, x.raw(), w_desc_, w.raw(), conv_desc_,
                                         fwd_algo_, workspace_.raw(), workspace_.nbytes(), &zero, y_desc_, y.raw()));
}

void Conv::backward_data(const Tensor& dy, const Tensor& w, Tensor& dx) {
  AE_CHECK(chosen_, "cuDNN reference conv: call choose_algorithms before backward_data");
  check_operands("cuDNN conv backward_data", dy, y_shape_, w, w_shape_, dx, x_shape_);
  const float one = 1.0f, zero = 0.0f;
  use_math_of(ConvPass::backward_data);
  AE_CUDNN_CHECK(cudnnConvolutionBackwardData(handle_.get(), &one, w_desc_, w.raw(), y_desc_, dy.raw(), conv_desc_,
                                              dgrad_algo_, workspace_.raw(), workspace_.nbytes(), &zero, x_desc_,
                                              dx.raw()));
}

void Conv::backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw) {
  AE_CHECK(chosen_, "cuDNN reference conv: call choose_algorithms before backward_weight");
  check_operands("cuDNN conv backward_weight", x, x_shape_, dy, y_shape_, dw, w_shape_);
  const float one = 1.0f, zero = 0.0f;
  use_math_of(ConvPass::backward_weight);
  AE_CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle_.get(), &one, x_desc_, x.raw(), y_desc_, dy.raw(), conv_desc_,
                                                wgrad_algo_, workspace_.raw(), workspace_.nbytes(), &zero, w_desc_,
                                                dw.raw()));
}

ops::BatchNormTrainOut batchnorm_forward_train(Handle& handle, const ops::BatchNormParams& p, const Tensor& x,
                                               const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                               Tensor& running_var) {
  const char* op = "cuDNN batchnorm_forward_train";
  AE_CHECK(x.defined() && (x.ndim() == 4 || x.ndim() == 2), op << ": x must be [N,H,W,C] or [N,C]");
  const Shape channels{x.dim(-1)};
  check_device_f32(op, "x", x, x.shape());
  check_device_f32(op, "gamma", gamma, channels);
  check_device_f32(op, "beta", beta, channels);
  check_device_f32(op, "running_mean", running_mean, channels);
  check_device_f32(op, "running_var", running_var, channels);
  AE_CHECK(p.eps >= CUDNN_BN_MIN_EPSILON, op << ": eps " << p.eps << " is below CUDNN_BN_MIN_EPSILON");
  const TensorDesc x_desc(nhwc_descriptor(x.shape()));
  const TensorDesc bn_desc(bn_parameter_descriptor(x_desc.d));
  ops::BatchNormTrainOut out;
  out.y = Tensor::empty(x.shape(), DType::f32, x.device());
  out.save_mean = Tensor::empty(channels, DType::f32, x.device());
  out.save_invstd = Tensor::empty(channels, DType::f32, x.device());
  const float one = 1.0f, zero = 0.0f;
  AE_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
      handle.get(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc.d, x.raw(), x_desc.d, out.y.raw(), bn_desc.d,
      gamma.raw(), beta.raw(), static_cast<double>(p.momentum), running_mean.raw(), running_var.raw(),
      static_cast<double>(p.eps), out.save_mean.raw(), out.save_invstd.raw()));
  return out;
}

ops::BatchNormGrads batchnorm_backward_train(Handle& handle, const ops::BatchNormParams& p, const Tensor& x,
                                             const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                                             const Tensor& save_invstd) {
  const char* op = "cuDNN batchnorm_backward_train";
  AE_CHECK(x.defined() && (x.ndim() == 4 || x.ndim() == 2), op << ": x must be [N,H,W,C] or [N,C]");
  const Shape channels{x.dim(-1)};
  check_device_f32(op, "x", x, x.shape());
  check_device_f32(op, "dy", dy, x.shape());
  check_device_f32(op, "gamma", gamma, channels);
  check_device_f32(op, "save_mean", save_mean, channels);
  check_device_f32(op, "save_invstd", save_invstd, channels);
  const TensorDesc x_desc(nhwc_descriptor(x.shape()));
  const TensorDesc bn_desc(bn_parameter_descriptor(x_desc.d));
  ops::BatchNormGrads g;
  g.dx = Tensor::empty(x.shape(), DType::f32, x.device());
  g.dgamma = Tensor::empty(channels, DType::f32, x.device());
  g.dbeta = Tensor::empty(channels, DType::f32, x.device());
  const float one = 1.0f, zero = 0.0f;
  AE_CUDNN_CHECK(cudnnBatchNormalizationBackward(handle.get(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero,
                                                 x_desc.d, x.raw(), x_desc.d, dy.raw(), x_desc.d, g.dx.raw(),
                                                 bn_desc.d, gamma.raw(), g.dgamma.raw(), g.dbeta.raw(),
                                                 static_cast<double>(p.eps), save_mean.raw(), save_invstd.raw()));
  return g;
}

}  // namespace ae::cudnn_ref
