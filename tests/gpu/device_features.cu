// Kernels for test_device_features.cpp (see device_features.h).
#include "tests/gpu/device_features.h"

#include <cstring>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.h"
#include "kernels/cuda/reduce.h"
#include "runtime/tensor.h"

namespace ae::gputest {
namespace {

using namespace ae::cuda;

Tensor device_copy_of(const std::vector<float>& v) {
  return Tensor::from_vector({static_cast<int64_t>(v.size())}, v).to(Device::cuda());
}

constexpr int kMaxTreeThreads = 512;

__global__ void shared_tree_sum_kernel(const float* x, float* sums, bool missing_barrier) {
  AE_SHARED(float, partial, kMaxTreeThreads);
  const int t = static_cast<int>(threadIdx.x);
  const int n = static_cast<int>(blockDim.x);
  partial[t] = x[static_cast<int64_t>(blockIdx.x) * n + t];
  if (!missing_barrier) __syncthreads();
  for (int half = n / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    if (!missing_barrier) __syncthreads();
  }
  if (t == 0) sums[blockIdx.x] = partial[0];
}

__global__ void shuffle_block_sum_kernel(const float* x, double* sums) {
  const double v = x[static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x];
  const double total = block_sum(v);
  if (threadIdx.x == 0) sums[blockIdx.x] = total;
}

__global__ void shuffle_kernel(int kind, int arg, int width, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int v = 1000 * t + 7;
  int r = 0;
  switch (kind) {
    case 0: r = __shfl_sync(kFullMask, v, arg, width); break;
    case 1: r = __shfl_down_sync(kFullMask, v, static_cast<unsigned>(arg), width); break;
    case 2: r = __shfl_up_sync(kFullMask, v, static_cast<unsigned>(arg), width); break;
    default: r = __shfl_xor_sync(kFullMask, v, arg, width); break;
  }
  out[t] = r;
}

__global__ void ballot_kernel(int modulus, unsigned long long* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int predicate = t % modulus == 0;
  const unsigned bits = __ballot_sync(kFullMask, predicate);
  const unsigned long long any = __any_sync(kFullMask, predicate) ? 1ull : 0ull;
  const unsigned long long all = __all_sync(kFullMask, predicate) ? 1ull : 0ull;
  out[t] = bits | any << 32 | all << 33;
}

__global__ void atomic_kernel(int64_t n, float value, int* count, float* sum) {
  if (first_index() < n) {
    atomicAdd(count, 1);
    atomicAdd(sum, value);
  }
}

__global__ void reverse_kernel(const float* x, float* y) {
  float* buf = dynamic_shared<float>();
  const int t = static_cast<int>(threadIdx.x);
  const int n = static_cast<int>(blockDim.x);
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  buf[t] = x[base + t];
  __syncthreads();
  y[base + t] = buf[n - 1 - t];
}

// Fragment coordinates written out again from the PTX ISA's tables, independently of the
// helpers in kernels/cuda/mma.h, so a wrong helper (which the emulated mma also uses) shows up
// as a mismatch here even on the emulated device.
__global__ void mma_kernel(const float* a, const float* b, const float* c, float* d) {
  const int lane = static_cast<int>(threadIdx.x);
  const int group = lane >> 2, tig = lane % 4;
  const int a_row[4] = {group, group + 8, group, group + 8};
  const int a_col[4] = {tig, tig, tig + 4, tig + 4};
  const int b_row[2] = {tig, tig + 4};
  const int c_row[4] = {group, group, group + 8, group + 8};
  const int c_col[4] = {tig * 2, tig * 2 + 1, tig * 2, tig * 2 + 1};
  uint32_t af[4], bf[2];
  float cf[4], df[4];
  for (int i = 0; i < 4; ++i) af[i] = to_tf32(a[a_row[i] * 8 + a_col[i]]);
  for (int i = 0; i < 2; ++i) bf[i] = to_tf32(b[b_row[i] * 8 + group]);
  for (int i = 0; i < 4; ++i) cf[i] = c[c_row[i] * 8 + c_col[i]];
  ::ae::cuda::mma_m16n8k8_tf32(df, af, bf, cf);
  for (int i = 0; i < 4; ++i) d[c_row[i] * 8 + c_col[i]] = df[i];
}

// m16n8k16 bf16 fragments, again written out from the PTX ISA's tables rather than mma.h's helpers.
// a_vals[i] / b_vals[i] are the elements a0..a7 / b0..b3; a register holds (a[2j], a[2j+1]).
__global__ void mma_bf16_kernel(const float* a, const float* b, const float* c, float* d) {
  const int lane = static_cast<int>(threadIdx.x);
  const int group = lane >> 2, tig = lane % 4;
  float a_vals[8], b_vals[4];
  for (int i = 0; i < 8; ++i) {
    const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
    const int col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
    a_vals[i] = a[row * 16 + col];
  }
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
    b_vals[i] = b[row * 8 + group];
  }
  const int c_row[4] = {group, group, group + 8, group + 8};
  const int c_col[4] = {tig * 2, tig * 2 + 1, tig * 2, tig * 2 + 1};
  uint32_t af[4], bf[2];
  float cf[4], df[4];
  for (int j = 0; j < 4; ++j) af[j] = pack_bf16x2(a_vals[2 * j], a_vals[2 * j + 1]);
  for (int j = 0; j < 2; ++j) bf[j] = pack_bf16x2(b_vals[2 * j], b_vals[2 * j + 1]);
  for (int i = 0; i < 4; ++i) cf[i] = c[c_row[i] * 8 + c_col[i]];
  ::ae::cuda::mma_m16n8k16_bf16(df, af, bf, cf);
  for (int i = 0; i < 4; ++i) d[c_row[i] * 8 + c_col[i]] = df[i];
}

__global__ void pack_bf16x2_kernel(const float* lo, const float* hi, uint32_t* words, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) words[i] = pack_bf16x2(lo[i], hi[i]);
}

__global__ void to_tf32_kernel(const float* x, uint32_t* bits, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) bits[i] = to_tf32(x[i]);
}

__global__ void bad_mask_kernel(int* out) { out[threadIdx.x] = __shfl_sync(kFullMask, 1, 0); }

}  // namespace

std::vector<float> shared_tree_block_sums(const std::vector<float>& x, int threads, bool missing_barrier) {
  const int blocks = static_cast<int>(x.size()) / threads;
  Tensor dx = device_copy_of(x);
  Tensor sums = Tensor::empty({blocks}, DType::f32, Device::cuda());
  AE_LAUNCH(shared_tree_sum_kernel, dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(threads)), 0,
            nullptr, dx.f32(), sums.f32(), missing_barrier);
  return sums.to_vector();
}

std::vector<double> shuffle_block_sums(const std::vector<float>& x, int threads) {
  const int blocks = static_cast<int>(x.size()) / threads;
  Tensor dx = device_copy_of(x);
  Tensor sums = Tensor::empty({blocks * 8}, DType::u8, Device::cuda());
  AE_LAUNCH(shuffle_block_sum_kernel, dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(threads)), 0,
            nullptr, dx.f32(), reinterpret_cast<double*>(sums.data<uint8_t>()));
  Tensor host = sums.to(Device::cpu());
  std::vector<double> out(static_cast<std::size_t>(blocks));
  std::memcpy(out.data(), host.raw(), out.size() * sizeof(double));
  return out;
}

std::vector<int> shuffle_results(Shuffle kind, int arg, int width, int threads) {
  Tensor out = Tensor::empty({threads * 4}, DType::u8, Device::cuda());
  AE_LAUNCH(shuffle_kernel, dim3(1), dim3(static_cast<unsigned>(threads)), 0, nullptr, static_cast<int>(kind), arg,
            width, reinterpret_cast<int*>(out.data<uint8_t>()));
  Tensor host = out.to(Device::cpu());
  std::vector<int> r(static_cast<std::size_t>(threads));
  std::memcpy(r.data(), host.raw(), r.size() * sizeof(int));
  return r;
}

std::vector<uint64_t> ballot_results(int modulus, int threads) {
  Tensor out = Tensor::empty({threads}, DType::i64, Device::cuda());
  AE_LAUNCH(ballot_kernel, dim3(1), dim3(static_cast<unsigned>(threads)), 0, nullptr, modulus,
            reinterpret_cast<unsigned long long*>(out.data<int64_t>()));
  Tensor host = out.to(Device::cpu());
  std::vector<uint64_t> r(static_cast<std::size_t>(threads));
  std::memcpy(r.data(), host.raw(), r.size() * sizeof(uint64_t));
  return r;
}

AtomicCounts atomic_counts(int64_t n, float value) {
  Tensor count = Tensor::zeros({4}, DType::u8, Device::cuda());
  Tensor sum = Tensor::zeros({1}, DType::f32, Device::cuda());
  AE_LAUNCH(atomic_kernel, dim3(static_cast<unsigned>((n + 127) / 128)), dim3(128), 0, nullptr, n, value,
            reinterpret_cast<int*>(count.data<uint8_t>()), sum.f32());
  Tensor host = count.to(Device::cpu());
  AtomicCounts r{};
  std::memcpy(&r.count, host.raw(), sizeof(int));
  r.sum = sum.item();
  return r;
}

std::vector<float> reverse_blocks_dynamic_shared(const std::vector<float>& x, int threads) {
  const int blocks = static_cast<int>(x.size()) / threads;
  Tensor dx = device_copy_of(x);
  Tensor y = Tensor::empty({static_cast<int64_t>(x.size())}, DType::f32, Device::cuda());
  AE_LAUNCH(reverse_kernel, dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(threads)),
            static_cast<std::size_t>(threads) * sizeof(float), nullptr, dx.f32(), y.f32());
  return y.to_vector();
}

std::vector<float> mma_m16n8k8_tf32(const std::vector<float>& a, const std::vector<float>& b,
                                    const std::vector<float>& c) {
  Tensor da = device_copy_of(a), db = device_copy_of(b), dc = device_copy_of(c);
  Tensor d = Tensor::empty({16 * 8}, DType::f32, Device::cuda());
  AE_LAUNCH(mma_kernel, dim3(1), dim3(32), 0, nullptr, da.f32(), db.f32(), dc.f32(), d.f32());
  return d.to_vector();
}

std::vector<uint32_t> to_tf32_bits(const std::vector<float>& x) {
  Tensor dx = device_copy_of(x);
  const int64_t n = static_cast<int64_t>(x.size());
  Tensor bits = Tensor::empty({n * 4}, DType::u8, Device::cuda());
  AE_LAUNCH(to_tf32_kernel, dim3(blocks_for(n, 128)), dim3(128), 0, nullptr, dx.f32(),
            reinterpret_cast<uint32_t*>(bits.data<uint8_t>()), n);
  Tensor host = bits.to(Device::cpu());
  std::vector<uint32_t> r(x.size());
  std::memcpy(r.data(), host.raw(), r.size() * sizeof(uint32_t));
  return r;
}

std::vector<float> mma_m16n8k16_bf16(const std::vector<float>& a, const std::vector<float>& b,
                                     const std::vector<float>& c) {
  Tensor da = device_copy_of(a), db = device_copy_of(b), dc = device_copy_of(c);
  Tensor d = Tensor::empty({16 * 8}, DType::f32, Device::cuda());
  AE_LAUNCH(mma_bf16_kernel, dim3(1), dim3(32), 0, nullptr, da.f32(), db.f32(), dc.f32(), d.f32());
  return d.to_vector();
}

std::vector<uint32_t> pack_bf16x2_words(const std::vector<float>& lo, const std::vector<float>& hi) {
  Tensor dlo = device_copy_of(lo), dhi = device_copy_of(hi);
  const int64_t n = static_cast<int64_t>(lo.size());
  Tensor words = Tensor::empty({n * 4}, DType::u8, Device::cuda());
  AE_LAUNCH(pack_bf16x2_kernel, dim3(blocks_for(n, 128)), dim3(128), 0, nullptr, dlo.f32(), dhi.f32(),
            reinterpret_cast<uint32_t*>(words.data<uint8_t>()), n);
  Tensor host = words.to(Device::cpu());
  std::vector<uint32_t> r(lo.size());
  std::memcpy(r.data(), host.raw(), r.size() * sizeof(uint32_t));
  return r;
}

void shuffle_with_full_mask_in_partial_warp(int threads) {
  Tensor out = Tensor::empty({threads * 4}, DType::u8, Device::cuda());
  AE_LAUNCH(bad_mask_kernel, dim3(1), dim3(static_cast<unsigned>(threads)), 0, nullptr,
            reinterpret_cast<int*>(out.data<uint8_t>()));
}

}  // namespace ae::gputest
