// Kernels for test_cuda_async_copy.cpp (see async_copy_kernels.h).
#include "tests/gpu/async_copy_kernels.h"

#include <bit>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.h"
#include "runtime/tensor.h"

namespace ae::gputest {
namespace {

using namespace ae::cuda;

// 32-bit words (uint32 or int) travel as f32 tensors of the same bits.
template <class T>
Tensor device_bits(const std::vector<T>& v) {
  static_assert(sizeof(T) == 4, "32-bit words");
  std::vector<float> bits(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) bits[i] = std::bit_cast<float>(v[i]);
  return Tensor::from_vector({static_cast<int64_t>(v.size())}, bits).to(Device::cuda());
}
Tensor device_words(const std::vector<uint32_t>& v) { return device_bits(v); }
Tensor device_ints(const std::vector<int>& v) { return device_bits(v); }
Tensor device_zeros(int64_t n) { return Tensor::zeros({n}, DType::f32, Device::cuda()); }
template <class T>
T* bits(const Tensor& t) {
  return static_cast<T*>(t.raw());
}
std::vector<uint32_t> host_words(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  std::vector<uint32_t> v(static_cast<std::size_t>(h.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::bit_cast<uint32_t>(h.f32()[i]);
  return v;
}

constexpr int kLdmatrixWords = 256;

template <int kMatrices>
__global__ void ldmatrix_kernel(const uint32_t* words, int n_words, const int* row_words, uint32_t* out) {
  AE_SHARED(uint32_t, tile, kLdmatrixWords);
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < n_words; i += kWarp) tile[i] = words[i];
  __syncthreads();
  uint32_t r[kMatrices];
  ldmatrix_m8n8_b16<kMatrices>(r, tile + row_words[lane]);
  for (int j = 0; j < kMatrices; ++j) out[lane * kMatrices + j] = r[j];
}

__global__ void cp_async_16_kernel(const uint32_t* src, const int* src_bytes, bool use_wait_all, uint32_t* before,
                                   uint32_t* after) {
  AE_SHARED(uint32_t, dst, 4 * 256);
  const int t = static_cast<int>(threadIdx.x);
  cp_async_cg_16(dst + 4 * t, src + 4 * t, src_bytes[t]);
  cp_async_commit();
  for (int i = 0; i < 4; ++i) before[4 * t + i] = dst[4 * t + i];
  if (use_wait_all) {
    cp_async_wait_all();
  } else {
    cp_async_wait_group<0>();
  }
  for (int i = 0; i < 4; ++i) after[4 * t + i] = dst[4 * t + i];
}

template <int kBytes>
__global__ void cp_async_ca_kernel(const uint32_t* src, const int* src_bytes, uint32_t* before, uint32_t* after) {
  AE_SHARED(uint32_t, dst, 4 * 256);
  const int t = static_cast<int>(threadIdx.x);
  for (int i = 0; i < 4; ++i) dst[4 * t + i] = 0x12345678u;  // the words past the copy must stay
  ::ae::cuda::cp_async_ca<kBytes>(dst + 4 * t, src + 4 * t, src_bytes[t]);
  cp_async_wait_all();  // commits the copy too
  for (int i = 0; i < 4; ++i) after[4 * t + i] = dst[4 * t + i];
  for (int i = 0; i < 4; ++i) before[4 * t + i] = 0;
}

__device__ __forceinline__ int outstanding_groups() {
#if defined(AE_EMULATED_DEVICE)
  return ::ae::emu::async_copy_outstanding_groups();
#else
  return -1;
#endif
}

// src: [destination 0..3][thread][4 words]
__global__ void cp_async_groups_kernel(const uint32_t* src, uint32_t* words, int* outstanding) {
  AE_SHARED(uint32_t, dst, 4 * 4 * kWarp);
  const int t = static_cast<int>(threadIdx.x);
  const auto slot = [&](int d) { return 4 * (d * kWarp + t); };
  for (int d = 0; d < 4; ++d) {
    cp_async_cg_16(dst + slot(d), src + slot(d), 16);
    if (d < 3) cp_async_commit();  // the fourth copy stays uncommitted
  }
  const auto snapshot = [&](int wait) {
    for (int d = 0; d < 4; ++d) {
      for (int i = 0; i < 4; ++i) words[((t * 4 + wait) * 4 + d) * 4 + i] = dst[slot(d) + i];
    }
    outstanding[t * 4 + wait] = outstanding_groups();
  };
  cp_async_wait_group<2>();
  snapshot(0);
  cp_async_wait_group<1>();
  snapshot(1);
  cp_async_wait_group<0>();
  snapshot(2);
  cp_async_wait_all();
  snapshot(3);
}

__global__ void cp_async_neighbour_kernel(const uint32_t* src, bool wait, uint32_t* out) {
  AE_SHARED(uint32_t, dst, 4 * 256);
  const int t = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x);
  cp_async_cg_16(dst + 4 * t, src + 4 * t, 16);
  cp_async_commit();
  if (wait) cp_async_wait_group<0>();
  __syncthreads();
  const int u = (t + 1) % n;
  for (int i = 0; i < 4; ++i) out[4 * t + i] = dst[4 * u + i];
  __syncthreads();
  if (!wait) cp_async_wait_all();  // the copy itself must still complete before the thread exits
}

__global__ void cp_async_leak_kernel(const uint32_t* src) {
  AE_SHARED(uint32_t, dst, 4 * kWarp);
  const int t = static_cast<int>(threadIdx.x);
  cp_async_cg_16(dst + 4 * t, src + 4 * t, 16);
  cp_async_commit();
}

}  // namespace

std::vector<uint32_t> ldmatrix_words(const std::vector<uint32_t>& words, const std::vector<int>& row_words,
                                     int matrices) {
  const Tensor w = device_words(words), rows = device_ints(row_words), out = device_zeros(kWarp * matrices);
  const int n = static_cast<int>(words.size());
  const auto* wp = bits<const uint32_t>(w);
  const int* rp = bits<const int>(rows);
  auto* op = bits<uint32_t>(out);
  if (matrices == 1) AE_LAUNCH(ldmatrix_kernel<1>, dim3(1), dim3(kWarp), 0, Stream{}, wp, n, rp, op);
  if (matrices == 2) AE_LAUNCH(ldmatrix_kernel<2>, dim3(1), dim3(kWarp), 0, Stream{}, wp, n, rp, op);
  if (matrices == 4) AE_LAUNCH(ldmatrix_kernel<4>, dim3(1), dim3(kWarp), 0, Stream{}, wp, n, rp, op);
  return host_words(out);
}

CopySnapshots cp_async_16(const std::vector<uint32_t>& src, const std::vector<int>& src_bytes, bool use_wait_all) {
  const int threads = static_cast<int>(src_bytes.size());
  const Tensor s = device_words(src), b = device_ints(src_bytes);
  const Tensor before = device_zeros(4 * threads), after = device_zeros(4 * threads);
  AE_LAUNCH(cp_async_16_kernel, dim3(1), dim3(static_cast<unsigned>(threads)), 0, Stream{}, bits<const uint32_t>(s),
            bits<const int>(b), use_wait_all, bits<uint32_t>(before), bits<uint32_t>(after));
  return {host_words(before), host_words(after)};
}

CopySnapshots cp_async_ca(const std::vector<uint32_t>& src, const std::vector<int>& src_bytes, int bytes) {
  const int threads = static_cast<int>(src_bytes.size());
  const Tensor s = device_words(src), b = device_ints(src_bytes);
  const Tensor before = device_zeros(4 * threads), after = device_zeros(4 * threads);
  const auto* sp = bits<const uint32_t>(s);
  const int* bp = bits<const int>(b);
  const dim3 block(static_cast<unsigned>(threads));
  if (bytes == 4) {
    AE_LAUNCH(cp_async_ca_kernel<4>, dim3(1), block, 0, Stream{}, sp, bp, bits<uint32_t>(before), bits<uint32_t>(after));
  }
  if (bytes == 8) {
    AE_LAUNCH(cp_async_ca_kernel<8>, dim3(1), block, 0, Stream{}, sp, bp, bits<uint32_t>(before), bits<uint32_t>(after));
  }
  return {host_words(before), host_words(after)};
}

GroupSnapshots cp_async_groups(const std::vector<uint32_t>& src) {
  const Tensor s = device_words(src), words = device_zeros(kWarp * 4 * 4 * 4), outstanding = device_zeros(kWarp * 4);
  AE_LAUNCH(cp_async_groups_kernel, dim3(1), dim3(kWarp), 0, Stream{}, bits<const uint32_t>(s), bits<uint32_t>(words),
            bits<int>(outstanding));
  GroupSnapshots r;
  r.words = host_words(words);
  for (const uint32_t o : host_words(outstanding)) r.outstanding.push_back(static_cast<int>(o));
  return r;
}

std::vector<uint32_t> cp_async_neighbour_read(const std::vector<uint32_t>& src, int threads, bool wait) {
  const Tensor s = device_words(src), out = device_zeros(4 * threads);
  AE_LAUNCH(cp_async_neighbour_kernel, dim3(1), dim3(static_cast<unsigned>(threads)), 0, Stream{},
            bits<const uint32_t>(s), wait, bits<uint32_t>(out));
  return host_words(out);
}

void cp_async_exit_without_wait(int blocks) {
  const Tensor s = device_words(std::vector<uint32_t>(4 * kWarp, 1u));
  AE_LAUNCH(cp_async_leak_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarp), 0, Stream{},
            bits<const uint32_t>(s));
}

}  // namespace ae::gputest
