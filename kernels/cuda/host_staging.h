#pragma once
// Uploads of host memory to the device through reusable pinned (page-locked) staging buffers.
//
// A copy from ordinary pageable host memory makes the CUDA driver stage it through a small
// internal pinned buffer and block until the transfer is done. Here the uploader owns two pinned
// buffers (cudaHostAlloc, allocated once and reused by every upload) and streams the source
// through them in chunks: while the DMA engine copies chunk k from one buffer
// (cudaMemcpyAsync on the backend's stream), the host fills the other with chunk k+1. The call
// returns once the source has been read into pinned memory, so the caller may reuse or free it
// at once; the device bytes are ready for any work queued later on the backend's stream.
//
// The emulated device runs the same chunking code with plain host buffers and synchronous copies,
// so the bookkeeping (chunk boundaries, buffer reuse, statistics) is tested without a GPU.
#include <cstddef>
#include <cstdint>

namespace ae::cuda {

// Copies `bytes` from host memory `src` to device memory `dst` (see above). Thread-safe.
void staged_upload(void* dst, const void* src, std::size_t bytes);

struct StagingStats {
  uint64_t uploads = 0;             // staged_upload calls with at least one byte
  uint64_t bytes = 0;               // bytes uploaded through the staging buffers
  uint64_t chunks = 0;              // asynchronous chunk copies issued
  uint64_t buffer_allocations = 0;  // pinned buffers allocated (stays at 2 while they are reused)
  std::size_t buffer_bytes = 0;     // pinned bytes held now
};
StagingStats staging_stats();

// Chunk size of each of the two buffers (default 4 MiB). Changing it frees the buffers; they are
// reallocated at the next upload. Tests use a small size to exercise multi-chunk uploads.
void set_staging_chunk_bytes(std::size_t bytes);
std::size_t staging_chunk_bytes();

}  // namespace ae::cuda
