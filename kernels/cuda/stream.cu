#include "kernels/cuda/stream.h"

#include "kernels/cuda/cuda_check.h"

namespace ae::cuda {

#if defined(AE_EMULATED_DEVICE)
Stream backend_stream() { return nullptr; }
void synchronize_stream(Stream) {}
StreamEvent::StreamEvent() = default;
StreamEvent::~StreamEvent() = default;
void StreamEvent::record(Stream) { recorded_ = true; }
void StreamEvent::wait() { recorded_ = false; }
#else
Stream backend_stream() { return nullptr; }  // the legacy default stream (see stream.h)
void synchronize_stream(Stream stream) { AE_CUDA_CHECK(cudaStreamSynchronize(stream)); }
StreamEvent::StreamEvent() { AE_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
StreamEvent::~StreamEvent() { (void)cudaEventDestroy(event_); }
void StreamEvent::record(Stream stream) {
  AE_CUDA_CHECK(cudaEventRecord(event_, stream));
  recorded_ = true;
}
void StreamEvent::wait() {
  if (recorded_) AE_CUDA_CHECK(cudaEventSynchronize(event_));
  recorded_ = false;
}
#endif

}  // namespace ae::cuda
