#pragma once
// AE_CUDA_CHECK(cudaMalloc(&p, n)): every CUDA runtime call is checked, and a failure becomes an
// ae::Error with the statement, file, line and CUDA's own description. Real-GPU build only.
#if !defined(AE_EMULATED_DEVICE)
#include <cuda_runtime.h>

#include "runtime/error.h"

#define AE_CUDA_CHECK(stmt)                                                                            \
  do {                                                                                                 \
    const cudaError_t ae_cuda_status_ = (stmt);                                                        \
    if (ae_cuda_status_ != cudaSuccess) {                                                              \
      AE_FAIL("CUDA call failed: " << #stmt << ": " << cudaGetErrorName(ae_cuda_status_) << " ("       \
                                   << cudaGetErrorString(ae_cuda_status_) << ")");                    \
    }                                                                                                  \
  } while (0)
#endif
