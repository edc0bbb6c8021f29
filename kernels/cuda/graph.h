#pragma once
// CUDA Graphs: device work captured once and replayed (issue 15).
//
// Design (DESIGN.md style):
// - Capture. begin_capture() makes the calling host thread a capturing thread until end_capture().
//   Everything the backend queues from that thread is recorded, not run: every AE_LAUNCH (the
//   `nullptr` stream of the call sites means "the current stream", which is the graph's own capture
//   stream while capturing) and every device-to-device copy. A capture executes nothing, on both
//   devices, so a test that reads a captured output before replay() sees the allocator's poison.
// - Real GPU: cudaStreamBeginCapture on a stream the graph creates (non-blocking, so the legacy
//   default stream that the rest of the backend uses is never implicitly joined to the capture),
//   cudaStreamEndCapture, cudaGraphInstantiate, and cudaGraphLaunch on the backend's (legacy)
//   stream, so a replay is ordered after the uploads queued before it and before the downloads that
//   follow it. Mode cudaStreamCaptureModeThreadLocal: a stray unsafe call (cudaMalloc, a
//   synchronous cudaMemcpy) from the capturing thread is a CUDA error instead of a silent hole in
//   the graph, while other host threads (the loader's, the collectives' watchdog) are not affected,
//   as they would be under Global. The allocator's own calls (growing the graph's pool, red zones)
//   switch that thread to Relaxed around the call, as PyTorch's allocator does.
// - Emulated device: AE_LAUNCH appends the kernel and a copy of its argument tuple to the graph
//   (the arguments are frozen by value exactly as a real capture freezes kernel parameters), a
//   device-to-device copy appends a copy node, and replay() runs the nodes in order. So the classic
//   graph bugs fail a test without a GPU: a host-computed scalar passed by value is frozen, a host
//   read during capture is refused (below), and memory reuse is governed by the same pool rules.
// - Refused during a capture, with an ae::Error naming the operation and the graph, on both devices
//   (refuse_during_capture): downloads and host reads (Tensor::item, to_vector, to(cpu)), uploads
//   (a captured copy would read the host buffer again at every replay: stage new inputs into the
//   graph's static input before replay() instead), synchronize(), a stream synchronisation or event
//   wait, releasing the allocator's cache, launches on another stream, a nested capture, a replay.
//   A refusal abandons the capture (the thread leaves capture mode at once, so the code that handles
//   the error runs normally); end_capture() then reports the first refusal.
// - Memory. Allocations made by the capturing thread come from a pool private to the graph
//   (device_memory.h): a block freed during or after the capture goes back to that pool, never to
//   the general cache, while the graph lives, so a replay never writes memory that someone else now
//   owns. Blocks allocated before the capture ended (weights, static inputs, anything a captured
//   kernel may hold a pointer to) and freed while the graph lives are held back from reuse until
//   the graph is destroyed ("deferred" in MemoryStats): a replay may still read or write them.
//   Departure from PyTorch: PyTorch leaves keeping such tensors alive to the user; here a dropped
//   input buffer cannot be handed to someone else while a graph could still write it.
// - What a graph cannot see: by-value kernel arguments (scalars, pointers) are frozen at capture.
//   Code that must vary per replay reads its values from device memory (the static input, a small
//   coefficient buffer written before each replay).
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "kernels/cuda/stream.h"

namespace ae::cuda {

class CapturedGraph {
 public:
  explicit CapturedGraph(std::string name);
  ~CapturedGraph();  // abandons an open capture; frees the graph and returns its pool
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  // Starts recording on this thread. A graph captured before is discarded first (re-capture).
  void begin_capture();
  // Stops recording and instantiates the graph. Throws when the capture was abandoned by a refusal.
  void end_capture();
  // begin_capture(), work(), end_capture(); an exception from work() abandons the capture.
  void capture(const std::function<void()>& work);
  // Queues the recorded work once more on the backend's stream (real GPU: asynchronous, like any
  // launch; emulated: runs the nodes in order).
  void replay();

  const std::string& name() const;
  bool captured() const;
  // Recorded operations (kernels and copies).
  std::size_t node_count() const;
  // Bytes of device memory in the graph's private pool (live and free blocks).
  std::size_t pool_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// True while this thread captures a graph.
bool capturing();
// The name of the graph this thread captures ("" when none).
std::string capturing_graph_name();
// When this thread captures: abandons the capture and throws an ae::Error
// "<operation> during the capture of CUDA graph '<name>': <why>". A no-op otherwise.
void refuse_during_capture(const std::string& operation, const char* why);

// For the backend's own code (launch.h, device_memory.cu, runtime.cu): where work goes.
// Device-to-device copy: recorded while capturing, else run in stream order.
void device_to_device_copy(void* dst, const void* src, std::size_t bytes);
// Zero bytes of device memory (Tensor::zero_): a memset, recorded while capturing, else run in
// stream order; no host buffer, so it may be captured.
void device_zero(void* dst, std::size_t bytes);
#if defined(AE_EMULATED_DEVICE)
// Appends a node to this thread's capture (precondition: capturing()).
void record_node(const char* what, std::function<void()> run);
#else
// The stream a launch with `requested` goes to: the capture stream while capturing (a request for
// any other non-null stream during a capture is refused), else `requested`.
Stream launch_stream(const char* kernel, Stream requested);
// Sets this thread's capture mode to Relaxed for the allocator's raw calls during a capture.
class RelaxedCaptureScope {
 public:
  RelaxedCaptureScope();
  ~RelaxedCaptureScope();
  RelaxedCaptureScope(const RelaxedCaptureScope&) = delete;
  RelaxedCaptureScope& operator=(const RelaxedCaptureScope&) = delete;

 private:
  int previous_ = 0;
  bool active_ = false;
};
#endif

}  // namespace ae::cuda
