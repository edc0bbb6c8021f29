#pragma once
// Small kernels that exercise one device feature each (barriers, shared memory, warp exchanges,
// atomics, tensor-core wrappers), built for the emulated device and for real GPUs from the same
// source (device_features.cu). Their results are compared against scalar references in
// test_device_features.cpp: on a real GPU this also checks that the emulator's semantics are
// the hardware's. Host functions take and return host vectors and handle device memory.
#include <cstdint>
#include <vector>

namespace ae::gputest {

// Per-block sums of x (blocks of `threads` elements, threads a power of two) by a shared-memory
// tree with a barrier between levels. missing_barrier = true drops those barriers: the bug the
// emulator's randomised thread order must expose.
std::vector<float> shared_tree_block_sums(const std::vector<float>& x, int threads, bool missing_barrier);

// Per-block sums through ae::cuda::block_sum (warp shuffles, then one warp), in double.
std::vector<double> shuffle_block_sums(const std::vector<float>& x, int threads);

enum class Shuffle { index, down, up, xor_ };
// Thread t of a single block of `threads` contributes value 1000*t + 7 and records what the
// shuffle returned.
std::vector<int> shuffle_results(Shuffle kind, int arg, int width, int threads);
// Thread t records __ballot_sync(full warp, predicate(t)) with predicate = (t % modulus == 0),
// plus __any_sync and __all_sync of the same predicate packed in bits 32 and 33.
std::vector<uint64_t> ballot_results(int modulus, int threads);

// n threads (over several blocks) each atomicAdd 1 to an int counter and `value` to a float.
struct AtomicCounts {
  int count;
  float sum;
};
AtomicCounts atomic_counts(int64_t n, float value);

// Each block reverses its slice of x through dynamic shared memory of blockDim floats.
std::vector<float> reverse_blocks_dynamic_shared(const std::vector<float>& x, int threads);

// D = A(16x8, row-major) * B(8x8, row-major) + C(16x8) through ae::cuda::mma_m16n8k8_tf32 after
// rounding A and B with ae::cuda::to_tf32. One warp.
std::vector<float> mma_m16n8k8_tf32(const std::vector<float>& a, const std::vector<float>& b,
                                    const std::vector<float>& c);
// to_tf32 applied on the device to each value, returned as bit patterns.
std::vector<uint32_t> to_tf32_bits(const std::vector<float>& x);

// D = A(16x16, row-major) * B(16x8, row-major) + C(16x8) through ae::cuda::mma_m16n8k16_bf16 after
// rounding A and B with ae::cuda::pack_bf16x2. One warp.
std::vector<float> mma_m16n8k16_bf16(const std::vector<float>& a, const std::vector<float>& b,
                                     const std::vector<float>& c);
// pack_bf16x2(lo[i], hi[i]) on the device, returned as the packed words.
std::vector<uint32_t> pack_bf16x2_words(const std::vector<float>& lo, const std::vector<float>& hi);

// A __shfl_sync with a full mask in a block of `threads` (not a multiple of 32) names lanes that
// do not exist: undefined on a GPU, an error on the emulated device. Runs the kernel.
void shuffle_with_full_mask_in_partial_warp(int threads);

}  // namespace ae::gputest
