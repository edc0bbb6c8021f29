#include "kernels/cuda/stream.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/graph.h"
#include "kernels/cuda/runtime.h"
#include "runtime/error.h"

namespace ae::cuda {

namespace {
// Host waits and cross-stream events are not graph operations (graph.h).
void refuse_stream_wait(const char* operation) {
  refuse_during_capture(operation, "a host wait or a cross-stream event cannot be part of a graph");
}
}  // namespace

#if defined(AE_EMULATED_DEVICE)
Stream backend_stream() { return nullptr; }
void synchronize_stream(Stream) { refuse_stream_wait("synchronize_stream()"); }
StreamEvent::StreamEvent() = default;
StreamEvent::~StreamEvent() = default;
void StreamEvent::record(Stream) {
  refuse_stream_wait("StreamEvent::record()");
  recorded_ = true;
}
void StreamEvent::wait() {
  refuse_stream_wait("StreamEvent::wait()");
  recorded_ = false;
}
void StreamEvent::order_before(Stream) {
  AE_CHECK(recorded_, "StreamEvent::order_before: the event was never recorded");
}
bool StreamEvent::finished() const { return true; }
OwnedStream::OwnedStream() = default;  // the emulated device runs everything in issue order
OwnedStream::~OwnedStream() = default;
#else
Stream backend_stream() { return nullptr; }  // the legacy default stream (see stream.h)
void synchronize_stream(Stream stream) {
  refuse_stream_wait("synchronize_stream()");
  AE_CUDA_CHECK(cudaStreamSynchronize(stream));
}
StreamEvent::StreamEvent() { AE_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
StreamEvent::~StreamEvent() { (void)cudaEventDestroy(event_); }
void StreamEvent::record(Stream stream) {
  refuse_stream_wait("StreamEvent::record()");
  AE_CUDA_CHECK(cudaEventRecord(event_, stream));
  recorded_ = true;
}
void StreamEvent::wait() {
  refuse_stream_wait("StreamEvent::wait()");
  if (recorded_) AE_CUDA_CHECK(cudaEventSynchronize(event_));
  recorded_ = false;
}
void StreamEvent::order_before(Stream stream) {
  refuse_stream_wait("StreamEvent::order_before()");
  // An event never recorded would make cudaStreamWaitEvent a no-op: that is a missing record().
  AE_CHECK(recorded_, "StreamEvent::order_before: the event was never recorded");
  AE_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}
bool StreamEvent::finished() const {
  bind_thread_to_device();  // the watchdog's thread may not have touched the device yet
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  AE_CUDA_CHECK(status);
  return true;
}
OwnedStream::OwnedStream() {
  bind_thread_to_device();  // a stream belongs to the device current when it is created
  AE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}
OwnedStream::~OwnedStream() { (void)cudaStreamDestroy(stream_); }
#endif

}  // namespace ae::cuda
