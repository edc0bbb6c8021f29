#pragma once
// Streams and events of the CUDA backend. There is one stream per device, the backend's
// stream: every kernel (the `nullptr` stream argument of AE_LAUNCH call sites) and every copy the
// backend queues is ordered on it, so device work runs in program order and a kernel launched
// after an asynchronous upload sees the uploaded bytes. It is CUDA's legacy default stream, which
// also orders the synchronous cudaMemcpy of downloads after all queued work. The emulated device
// runs every launch and copy synchronously, so there every stream operation is complete at once.
// The one other stream is the collectives' (OwnedStream below, kernels/cuda/nccl_grads.h): the
// gradient all-reduce runs there, ordered against the backend's stream by events only.
//
// No kernels/cuda/device.h here: this header is also included by host-compiled code (the real-GPU
// tests, built by g++ against ae_cuda), which cannot see device.h's __device__ functions. The
// handles are CUDA's own opaque types, declared here; device.h names the same types.
#if defined(AE_EMULATED_DEVICE)
namespace ae::cuda {
using Stream = void*;
}  // namespace ae::cuda
#else
struct CUstream_st;
struct CUevent_st;
namespace ae::cuda {
using Stream = CUstream_st*;  // cudaStream_t
}  // namespace ae::cuda
#endif

namespace ae::cuda {

Stream backend_stream();
// Blocks the host until everything queued on the stream has finished.
void synchronize_stream(Stream stream);

// Marks a point in a stream so the host can wait for the work queued before it (e.g. until an
// asynchronous copy no longer reads its source buffer). Not copyable: it owns a cudaEvent_t.
class StreamEvent {
 public:
  StreamEvent();
  ~StreamEvent();
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;

  void record(Stream stream);
  // Returns once the work queued before the last record() has finished (at once if never recorded).
  void wait();
  // Makes the work queued on `stream` after this call wait for the work queued before the last
  // record(), without blocking the host (cudaStreamWaitEvent): how two streams are ordered.
  void order_before(Stream stream);
  // Whether the work queued before the last record() has finished, without waiting
  // (cudaEventQuery; true if never recorded). Callable from any host thread, concurrently with
  // record() on another (the collective watchdog polls it, runtime/dist.h watch_async).
  bool finished() const;

 private:
#if !defined(AE_EMULATED_DEVICE)
  CUevent_st* event_ = nullptr;  // cudaEvent_t
#endif
  bool recorded_ = false;
};

// A stream of its own beside the backend's, for work that must not queue behind (or in front of)
// the compute kernels in program order: the gradient all-reduce runs on one. It is created
// non-blocking, so it is NOT implicitly ordered against the legacy default stream: every
// dependency between it and the backend's stream is an explicit StreamEvent::order_before.
// Created on the process's device (kernels/cuda/runtime.h) at construction. Not copyable.
class OwnedStream {
 public:
  OwnedStream();
  ~OwnedStream();
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  Stream get() const { return stream_; }

 private:
  Stream stream_ = nullptr;
};

}  // namespace ae::cuda
