#pragma once
// The four primitives device memory is built on. Real GPU: cudaMalloc/cudaFree/cudaMemcpy/
// cudaMemset. Emulated device: device memory is 256-byte aligned host memory.
#include <cstddef>

namespace ae::cuda {

void* raw_alloc(std::size_t bytes);  // nullptr when the device is out of memory
void raw_free(void* p) noexcept;
// Copies between any two of host and device memory (unified addressing tells the direction).
void raw_copy(void* dst, const void* src, std::size_t bytes);
void raw_fill(void* dst, unsigned char value, std::size_t bytes);

}  // namespace ae::cuda
