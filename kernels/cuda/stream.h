#pragma once
// Streams and events of the CUDA backend. There is one stream per device, the backend's
// stream: every kernel (the `nullptr` stream argument of AE_LAUNCH call sites) and every copy the
// backend queues is ordered on it, so device work runs in program order and a kernel launched
// after an asynchronous upload sees the uploaded bytes. It is CUDA's legacy default stream, which
// also orders the synchronous cudaMemcpy of downloads after all queued work. The emulated device
// runs every launch and copy synchronously, so there every stream operation is complete at once.
#include "kernels/cuda/device.h"

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

 private:
#if !defined(AE_EMULATED_DEVICE)
  cudaEvent_t event_ = nullptr;
#endif
  bool recorded_ = false;
};

}  // namespace ae::cuda
