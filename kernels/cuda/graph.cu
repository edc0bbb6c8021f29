// Captured device work (see graph.h).
#include "kernels/cuda/graph.h"

#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/runtime.h"
#include "runtime/error.h"

namespace ae::cuda {

struct CapturedGraph::Impl {
  enum class State { empty, capturing, abandoned, captured };
  std::string name;
  State state = State::empty;
  std::string abandoned_because;  // the refusal that abandoned the capture
  uint64_t pool = 0;              // the graph's private memory pool (0: none yet)
  uint64_t previous_pool = 0;     // the thread's pool before the capture
#if defined(AE_EMULATED_DEVICE)
  struct Node {
    const char* what;
    std::function<void()> run;
  };
  std::vector<Node> nodes;
#else
  cudaStream_t stream = nullptr;  // the capture stream (created at the first capture)
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
#endif

  // Leaves capture mode on this thread (the allocator's pool and, on a GPU, the stream capture).
  void stop_capturing();
  // Frees what a capture made (graph, nodes, pool), back to `empty`.
  void discard() noexcept;
};

namespace {

// The graph this thread is capturing (nullptr: none).
thread_local CapturedGraph::Impl* t_capture = nullptr;

}  // namespace

void CapturedGraph::Impl::stop_capturing() {
  t_capture = nullptr;
  set_thread_allocation_pool(previous_pool);
#if !defined(AE_EMULATED_DEVICE)
  cudaGraph_t g = nullptr;
  const cudaError_t status = cudaStreamEndCapture(stream, &g);
  if (state != State::capturing || status != cudaSuccess) {  // abandoned, or CUDA invalidated it
    if (g != nullptr) (void)cudaGraphDestroy(g);
    (void)cudaGetLastError();
    AE_CUDA_CHECK(status);  // a capture CUDA itself invalidated: name CUDA's reason
    return;
  }
  graph = g;
#endif
}

void CapturedGraph::Impl::discard() noexcept {
#if defined(AE_EMULATED_DEVICE)
  nodes.clear();
#else
  if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  exec = nullptr;
  graph = nullptr;
#endif
  if (pool != 0) release_graph_pool(pool);
  pool = 0;
  state = State::empty;
  abandoned_because.clear();
}

CapturedGraph::CapturedGraph(std::string name) : impl_(std::make_unique<Impl>()) { impl_->name = std::move(name); }

CapturedGraph::~CapturedGraph() {
  if (impl_->state == Impl::State::capturing) {
    impl_->state = Impl::State::abandoned;
    try {
      impl_->stop_capturing();
    } catch (...) {  // a destructor reports nothing; the graph is discarded below either way
    }
  }
  impl_->discard();
#if !defined(AE_EMULATED_DEVICE)
  if (impl_->stream != nullptr) (void)cudaStreamDestroy(impl_->stream);
#endif
}

void CapturedGraph::begin_capture() {
  Impl& g = *impl_;
  AE_CHECK(t_capture == nullptr, "begin_capture of CUDA graph '" << g.name << "' while this thread captures '"
                                                                  << t_capture->name
                                                                  << "': captures do not nest");
  AE_CHECK(g.state != Impl::State::capturing,
           "begin_capture of CUDA graph '" << g.name << "': it is being captured on another thread");
  AE_CHECK(initialize().usable, "CUDA graph '" << g.name << "': no usable CUDA device: " << initialize().reason);
  bind_thread_to_device();
  g.discard();  // a re-capture replaces the graph and its pool
  g.pool = create_graph_pool();
#if !defined(AE_EMULATED_DEVICE)
  if (g.stream == nullptr) AE_CUDA_CHECK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
  // Work queued before the capture (uploads into the static input, the weights) is on the legacy
  // stream; nothing of it is part of the graph, and replays are ordered after it by cudaGraphLaunch
  // on the same stream.
  AE_CUDA_CHECK(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
#endif
  pin_blocks_for_graph(g.pool);  // everything allocated so far may be referenced by the graph
  g.previous_pool = thread_allocation_pool();
  set_thread_allocation_pool(g.pool);
  g.state = Impl::State::capturing;
  t_capture = &g;
}

void CapturedGraph::end_capture() {
  Impl& g = *impl_;
  if (g.state == Impl::State::abandoned) {
    const std::string why = g.abandoned_because;
    g.discard();
    AE_FAIL("CUDA graph '" << g.name << "' was not captured: " << why);
  }
  AE_CHECK(g.state == Impl::State::capturing && t_capture == &g,
           "end_capture of CUDA graph '" << g.name << "' without a begin_capture on this thread");
  try {
    g.stop_capturing();
    pin_blocks_for_graph(g.pool);  // and everything allocated during the capture
#if !defined(AE_EMULATED_DEVICE)
    AE_CUDA_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));
#endif
  } catch (...) {
    g.discard();
    throw;
  }
  g.state = Impl::State::captured;
}

void CapturedGraph::capture(const std::function<void()>& work) {
  begin_capture();
  try {
    work();
  } catch (...) {
    if (impl_->state == Impl::State::capturing) {
      impl_->state = Impl::State::abandoned;
      try {
        impl_->stop_capturing();
      } catch (...) {  // the work's own error is the one to report
      }
    }
    impl_->discard();
    throw;
  }
  end_capture();
}

void CapturedGraph::replay() {
  Impl& g = *impl_;
  AE_CHECK(t_capture == nullptr, "replay of CUDA graph '" << g.name << "' during the capture of CUDA graph '"
                                                          << t_capture->name << "'");
  AE_CHECK(g.state == Impl::State::captured,
           "replay of CUDA graph '" << g.name << "': " << (g.state == Impl::State::capturing ? "its capture has not ended"
                                                                                              : "nothing was captured"));
#if defined(AE_EMULATED_DEVICE)
  for (const Impl::Node& n : g.nodes) n.run();
#else
  bind_thread_to_device();
  AE_CUDA_CHECK(cudaGraphLaunch(g.exec, backend_stream()));
#endif
}

const std::string& CapturedGraph::name() const { return impl_->name; }
bool CapturedGraph::captured() const { return impl_->state == Impl::State::captured; }

std::size_t CapturedGraph::node_count() const {
  if (impl_->state != Impl::State::captured) return 0;
#if defined(AE_EMULATED_DEVICE)
  return impl_->nodes.size();
#else
  std::size_t n = 0;
  AE_CUDA_CHECK(cudaGraphGetNodes(impl_->graph, nullptr, &n));
  return n;
#endif
}

std::size_t CapturedGraph::pool_bytes() const { return impl_->pool != 0 ? graph_pool_bytes(impl_->pool) : 0; }

bool capturing() { return t_capture != nullptr; }

std::string capturing_graph_name() { return t_capture != nullptr ? t_capture->name : std::string(); }

void refuse_during_capture(const std::string& operation, const char* why) {
  CapturedGraph::Impl* g = t_capture;
  if (g == nullptr) return;
  std::string message = operation + " during the capture of CUDA graph '" + g->name + "': " + why;
  g->state = CapturedGraph::Impl::State::abandoned;
  g->abandoned_because = message;
  try {
    g->stop_capturing();
  } catch (...) {  // the refusal is the error to report
  }
  AE_FAIL(message);
}

void device_to_device_copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  CapturedGraph::Impl* g = t_capture;
#if defined(AE_EMULATED_DEVICE)
  if (g != nullptr) {
    g->nodes.push_back({"device-to-device copy", [dst, src, bytes] { std::memmove(dst, src, bytes); }});
    return;
  }
  std::memmove(dst, src, bytes);
#else
  if (g != nullptr) {
    AE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g->stream));
    return;
  }
  AE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, backend_stream()));
#endif
}

void device_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  CapturedGraph::Impl* g = t_capture;
#if defined(AE_EMULATED_DEVICE)
  if (g != nullptr) {
    g->nodes.push_back({"memset", [dst, bytes] { std::memset(dst, 0, bytes); }});
    return;
  }
  std::memset(dst, 0, bytes);
#else
  AE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, g != nullptr ? g->stream : backend_stream()));
#endif
}

#if defined(AE_EMULATED_DEVICE)
void record_node(const char* what, std::function<void()> run) {
  AE_CHECK(t_capture != nullptr, "record_node(" << what << ") outside a capture");
  t_capture->nodes.push_back({what, std::move(run)});
}
#else
Stream launch_stream(const char* kernel, Stream requested) {
  CapturedGraph::Impl* g = t_capture;
  if (g == nullptr) return requested;
  if (requested != nullptr && requested != g->stream)
    refuse_during_capture(std::string("launch of kernel ") + kernel + " on another stream",
                          "only the backend's stream is captured; the launch would run at once, outside the graph");
  return g->stream;
}

RelaxedCaptureScope::RelaxedCaptureScope() {
  if (t_capture == nullptr) return;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  AE_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  previous_ = static_cast<int>(mode);
  active_ = true;
}

RelaxedCaptureScope::~RelaxedCaptureScope() {
  if (!active_) return;
  cudaStreamCaptureMode mode = static_cast<cudaStreamCaptureMode>(previous_);
  (void)cudaThreadExchangeStreamCaptureMode(&mode);
}
#endif

}  // namespace ae::cuda
