// SGD and Adam/AdamW steps, in place, with the CPU backend's formulas and order of operations
// (which follow torch.optim 1.13): scalar coefficients computed on the host in double and rounded
// to float, element work in float with the same explicit fused multiply-adds.
//
// Each op has a single-tensor kernel and a multi-tensor kernel that updates a whole list of
// tensors in one launch. Both call the same inline element function, so a tensor updated by
// the multi-tensor kernel is bitwise what the single-tensor kernel would have made of it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/multi_tensor.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

struct SgdCoefficients {
  float wd, momentum, keep, neg_lr;
  bool use_buffer, first, nesterov;
};

SgdCoefficients sgd_coefficients(const SgdParams& p, int64_t step) {
  SgdCoefficients c{};
  c.wd = p.weight_decay;
  c.momentum = p.momentum;
  c.keep = static_cast<float>(1.0 - static_cast<double>(p.dampening));
  c.neg_lr = -p.lr;
  c.use_buffer = p.momentum != 0.0f;
  c.first = step == 1;
  c.nesterov = p.nesterov;
  return c;
}

__device__ __forceinline__ void sgd_element(float* __restrict__ w, const float* __restrict__ g,
                                            float* __restrict__ buf, int64_t i, const SgdCoefficients& c) {
  float d = g[i];
  if (c.wd != 0.0f) d = fmaf(c.wd, w[i], d);
  if (c.use_buffer) {
    const float b = c.first ? d : fmaf(c.keep, d, buf[i] * c.momentum);
    buf[i] = b;
    d = c.nesterov ? fmaf(c.momentum, b, d) : b;
  }
  w[i] = fmaf(c.neg_lr, d, w[i]);
}

struct AdamCoefficients {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, wd;
  float neg_step_size, bias_correction2_sqrt, decoupled_decay;
  bool decoupled, coupled_decay;
};

AdamCoefficients adam_coefficients(const AdamParams& p, int64_t step) {
  const double t = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(p.beta1), t);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(p.beta2), t);
  AdamCoefficients c{};
  c.beta1 = p.beta1;
  c.beta2 = p.beta2;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(p.beta1));
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(p.beta2));
  c.eps = p.eps;
  c.wd = p.weight_decay;
  c.neg_step_size = static_cast<float>(-(static_cast<double>(p.lr) / bias_correction1));
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  c.decoupled_decay = static_cast<float>(1.0 - static_cast<double>(p.lr) * static_cast<double>(p.weight_decay));
  c.decoupled = p.decoupled;
  c.coupled_decay = !p.decoupled && p.weight_decay != 0.0f;
  return c;
}

__device__ __forceinline__ void adam_element(float* __restrict__ w, const float* __restrict__ g,
                                             float* __restrict__ m, float* __restrict__ v, int64_t i,
                                             const AdamCoefficients& c) {
  float w_i = w[i];
  if (c.decoupled) w_i = w_i * c.decoupled_decay;
  float d = g[i];
  if (c.coupled_decay) d = fmaf(c.wd, w_i, d);
  const float m_i = fmaf(c.one_minus_beta1, d, m[i] * c.beta1);
  const float v_i = fmaf(c.one_minus_beta2 * d, d, v[i] * c.beta2);
  const float denom = sqrtf(v_i) / c.bias_correction2_sqrt + c.eps;
  m[i] = m_i;
  v[i] = v_i;
  w[i] = w_i + c.neg_step_size * m_i / denom;
}

__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ buf, int64_t n,
                           SgdCoefficients c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) sgd_element(w, g, buf, i, c);
}

__global__ void adam_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, int64_t n, AdamCoefficients c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) adam_element(w, g, m, v, i, c);
}

// ---------------------------------------------------------------- multi-tensor launches
// The tensor list travels as a kernel argument (by value, no device-side table to upload and
// free), so one launch takes at most kMaxTensorsPerLaunch tensors: 40 entries keep the struct
// under 2 KiB, well inside CUDA's 4 KiB parameter limit. Longer lists launch once per chunk.
constexpr int kMaxTensorsPerLaunch = 40;
// Every block updates one contiguous range of this many elements of one tensor.
constexpr int64_t kElementsPerBlock = 4 * kThreads;

struct TensorTable {
  float* param[kMaxTensorsPerLaunch];
  const float* grad[kMaxTensorsPerLaunch];
  float* state1[kMaxTensorsPerLaunch];  // Adam m, or the SGD momentum buffer (null without momentum)
  float* state2[kMaxTensorsPerLaunch];  // Adam v; unused by SGD
  int64_t numel[kMaxTensorsPerLaunch];
  // Tensor k owns blocks [first_block[k], first_block[k + 1]); empty tensors are never entered.
  int64_t first_block[kMaxTensorsPerLaunch + 1];
  int count;
};
static_assert(sizeof(TensorTable) < 2048, "the tensor table must stay well inside the kernel parameter limit");

// Where a multi-tensor kernel reads its coefficients: by value (the eager step), or from device
// memory written before the launch or the graph replay, with a flag that skips the whole update
// (a captured step, kernels/graph.h: by-value coefficients would be frozen at the capture). Both
// give the element functions the same struct, so both make the same bits.
template <typename C>
struct ByValue {
  C c;
  __device__ __forceinline__ bool skip() const { return false; }
  __device__ __forceinline__ C get() const { return c; }
};
template <typename C>
struct FromDevice {
  const C* c;
  const int64_t* skip_flag;  // nonzero: leave every tensor unchanged
  __device__ __forceinline__ bool skip() const { return *skip_flag != 0; }
  __device__ __forceinline__ C get() const { return *c; }
};

template <typename Source>
__global__ void sgd_multi_kernel(TensorTable t, Source source) {
  if (source.skip()) return;
  const SgdCoefficients c = source.get();
  const int64_t block = blockIdx.x;
  const int k = owner_of_block(t.first_block, t.count, block);
  const int64_t begin = (block - t.first_block[k]) * kElementsPerBlock;
  const int64_t end = begin + kElementsPerBlock < t.numel[k] ? begin + kElementsPerBlock : t.numel[k];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) sgd_element(t.param[k], t.grad[k], t.state1[k], i, c);
}

template <typename Source>
__global__ void adam_multi_kernel(TensorTable t, Source source) {
  if (source.skip()) return;
  const AdamCoefficients c = source.get();
  const int64_t block = blockIdx.x;
  const int k = owner_of_block(t.first_block, t.count, block);
  const int64_t begin = (block - t.first_block[k]) * kElementsPerBlock;
  const int64_t end = begin + kElementsPerBlock < t.numel[k] ? begin + kElementsPerBlock : t.numel[k];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    adam_element(t.param[k], t.grad[k], t.state1[k], t.state2[k], i, c);
  }
}

// Fills tables with the non-empty tensors of the list and hands each full (or last) one to
// `launch(table)`. state1/state2 entries may be null (an unused buffer).
template <typename Launch>
void for_each_table(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>* state1, const std::vector<Tensor*>* state2, Launch&& launch) {
  TensorTable t{};
  auto flush = [&] {
    if (t.count > 0) launch(t);
    t = TensorTable{};
  };
  for (std::size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i]->numel();
    if (n == 0) continue;
    const int64_t blocks = (n + kElementsPerBlock - 1) / kElementsPerBlock;
    AE_CHECK(blocks <= kMaxBlocksPerLaunch,
             "optimizer multi-tensor step: params[" << i << "] has " << n << " elements, too many for one launch");
    if (t.count == kMaxTensorsPerLaunch || t.first_block[t.count] + blocks > kMaxBlocksPerLaunch) flush();
    const int k = t.count++;
    t.param[k] = params[i]->f32();
    t.grad[k] = grads[i]->f32();
    t.state1[k] = state1 && (*state1)[i]->defined() ? (*state1)[i]->f32() : nullptr;
    t.state2[k] = state2 ? (*state2)[i]->f32() : nullptr;
    t.numel[k] = n;
    t.first_block[k + 1] = t.first_block[k] + blocks;
  }
  flush();
}

unsigned table_blocks(const TensorTable& t) { return static_cast<unsigned>(t.first_block[t.count]); }

// flag[0] = 1 when loss[0] is NaN or infinite, else 0.
__global__ void nonfinite_flag_kernel(const float* __restrict__ loss, int64_t* __restrict__ flag) {
  if (threadIdx.x == 0 && blockIdx.x == 0) flag[0] = isfinite(loss[0]) ? 0 : 1;
}

// The coefficient struct's bytes as a CPU u8 tensor (uploaded by the caller outside any capture).
template <typename C>
Tensor coefficient_bytes(const C& c) {
  Tensor t = Tensor::empty({static_cast<int64_t>(sizeof(C))}, DType::u8);
  std::memcpy(t.raw(), &c, sizeof(C));
  return t;
}

template <typename C>
const C* device_coefficients(const Tensor& coefficients, const char* op) {
  AE_CHECK(coefficients.device().is_cuda() && coefficients.dtype() == DType::u8 &&
               coefficients.numel() == static_cast<int64_t>(sizeof(C)),
           op << ": coefficients " << coefficients.desc() << " are not a cuda u8 [" << sizeof(C)
              << "] buffer written from the matching *_coefficient_bytes()");
  return reinterpret_cast<const C*>(coefficients.raw());
}

const int64_t* device_flag(const Tensor& skip, const char* op) {
  AE_CHECK(skip.device().is_cuda() && skip.dtype() == DType::i64 && skip.numel() == 1,
           op << ": skip flag " << skip.desc() << " is not a cuda i64 [1] tensor (nonfinite_flag)");
  return reinterpret_cast<const int64_t*>(skip.raw());
}

}  // namespace

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const int64_t n = param.numel();
  const SgdCoefficients c = sgd_coefficients(p, step);
  float* buf = c.use_buffer ? momentum_buf.f32() : nullptr;
  AE_LAUNCH(sgd_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, param.f32(), grad.f32(), buf, n, c);
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const int64_t n = param.numel();
  const AdamCoefficients c = adam_coefficients(p, step);
  AE_LAUNCH(adam_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, param.f32(), grad.f32(), m.f32(),
            v.f32(), n, c);
}

void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step) {
  const SgdCoefficients c = sgd_coefficients(p, step);
  for_each_table(params, grads, c.use_buffer ? &momentum_bufs : nullptr, nullptr, [&](const TensorTable& t) {
    AE_LAUNCH(sgd_multi_kernel<ByValue<SgdCoefficients>>, dim3(table_blocks(t)), dim3(kThreads), 0, nullptr, t,
              ByValue<SgdCoefficients>{c});
  });
}

void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step) {
  const AdamCoefficients c = adam_coefficients(p, step);
  for_each_table(params, grads, &m, &v, [&](const TensorTable& t) {
    AE_LAUNCH(adam_multi_kernel<ByValue<AdamCoefficients>>, dim3(table_blocks(t)), dim3(kThreads), 0, nullptr, t,
              ByValue<AdamCoefficients>{c});
  });
}

Tensor sgd_coefficient_bytes(const SgdParams& p, int64_t step) { return coefficient_bytes(sgd_coefficients(p, step)); }
Tensor adam_coefficient_bytes(const AdamParams& p, int64_t step) {
  return coefficient_bytes(adam_coefficients(p, step));
}

void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                           const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                           const Tensor& coefficients, const Tensor& skip) {
  const FromDevice<SgdCoefficients> source{device_coefficients<SgdCoefficients>(coefficients, "sgd_step_multi_device"),
                                           device_flag(skip, "sgd_step_multi_device")};
  const bool use_buffer = p.momentum != 0.0f;  // as sgd_coefficients decides it, for every step
  for_each_table(params, grads, use_buffer ? &momentum_bufs : nullptr, nullptr, [&](const TensorTable& t) {
    AE_LAUNCH(sgd_multi_kernel<FromDevice<SgdCoefficients>>, dim3(table_blocks(t)), dim3(kThreads), 0, nullptr, t,
              source);
  });
}

void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                            const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                            const std::vector<Tensor*>& v, const Tensor& coefficients, const Tensor& skip) {
  (void)p;  // every coefficient comes from the buffer
  const FromDevice<AdamCoefficients> source{
      device_coefficients<AdamCoefficients>(coefficients, "adam_step_multi_device"),
      device_flag(skip, "adam_step_multi_device")};
  for_each_table(params, grads, &m, &v, [&](const TensorTable& t) {
    AE_LAUNCH(adam_multi_kernel<FromDevice<AdamCoefficients>>, dim3(table_blocks(t)), dim3(kThreads), 0, nullptr, t,
              source);
  });
}

Tensor nonfinite_flag(const Tensor& loss) {
  AE_CHECK(loss.device().is_cuda() && loss.dtype() == DType::f32 && loss.numel() == 1,
           "nonfinite_flag: loss " << loss.desc() << " is not a cuda f32 scalar");
  Tensor flag = Tensor::empty({1}, DType::i64, loss.device());
  AE_LAUNCH(nonfinite_flag_kernel, dim3(1), dim3(1), 0, nullptr, loss.f32(), reinterpret_cast<int64_t*>(flag.raw()));
  return flag;
}

}  // namespace ae::cuda
