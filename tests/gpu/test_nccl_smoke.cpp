// The 1-rank NCCL smoke test (scripts/gpu-check.sh runs it on a lent GPU): libnccl.so.2 loads
// through dlopen, a communicator of one rank is made (ncclGetUniqueId + ncclCommInitRank, no MPI),
// an all-reduce runs on a non-blocking stream ordered against the backend's stream by events, and
// the gradient path train_loop.cpp takes under mpirun (kernels/cuda/nccl_grads.h: pack, NCCL on
// the communication stream, unpack) returns every gradient bit for bit (the sum over one rank).
// Skipped on the emulated device and in builds without NCCL, saying which.
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/nccl_comm.h"
#include "kernels/cuda/nccl_grads.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/stream.h"
#include "runtime/dist.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// The device is there and this build has NCCL for it; else the binary is reported skipped.
bool nccl_ready() {
  if (!device_ready()) return false;
  if (emulated()) {
    test::skip_binary("NCCL runs on real GPUs only; the emulated device sums gradients through the host");
    return false;
  }
  if (!cuda::nccl_available()) {
    test::skip_binary("this build has no NCCL (CMake did not find nccl.h in the CUDA toolkit, or no MPI)");
    return false;
  }
  return true;
}

}  // namespace

// Needs no GPU: loading the library and resolving its functions is checked wherever the build
// has NCCL (the other cases then report the binary skipped when there is no GPU).
TEST_CASE("libnccl loads through dlopen, has every function aesthete calls, and names its version") {
  if (!cuda::nccl_available()) return;  // nccl_ready() in the next cases says why
  const std::string version = cuda::nccl::load_library();
  std::printf("NCCL %s\n", version.c_str());
  CHECK(version.rfind("2.", 0) == 0);
  CHECK(version.find("libnccl") != std::string::npos);  // names the file it loaded
}

TEST_CASE("a 1-rank communicator all-reduces a buffer on its own stream, ordered by events") {
  if (!nccl_ready()) return;
  bool shared = false;
  cuda::nccl::Communicator comm(1, 0, [&](void*, std::size_t bytes) { shared = bytes == 128; }, "NCCL smoke test");
  CHECK(shared);  // ncclUniqueId is 128 bytes: what MPI broadcasts between ranks
  const int64_t n = (int64_t{1} << 20) + 3;  // past NCCL's internal chunking, not a multiple of anything
  const Tensor host = test::random_tensor({n}, 5, -10.0f, 10.0f);
  Tensor buf = to_device(host);  // queued on the backend's stream
  cuda::OwnedStream comm_stream;
  cuda::StreamEvent uploaded, reduced;
  uploaded.record(cuda::backend_stream());
  uploaded.order_before(comm_stream.get());
  comm.allreduce_sum(buf.f32(), static_cast<std::size_t>(n), comm_stream.get(), "smoke all-reduce");
  reduced.record(comm_stream.get());
  reduced.order_before(cuda::backend_stream());
  // The download is ordered on the backend's stream, after the event: the sum over one rank is
  // the buffer itself, bit for bit.
  CHECK(test::bitwise_equal(buf.to(Device::cpu()), host));
  // A second call on the same communicator (the training loop makes one per step).
  comm.allreduce_sum(buf.f32(), static_cast<std::size_t>(n), comm_stream.get(), "second all-reduce");
  cuda::synchronize_stream(comm_stream.get());
  CHECK(test::bitwise_equal(buf.to(Device::cpu()), host));
  require_guards_intact();
}

TEST_CASE("the training loop's NCCL gradient sum on one rank returns every gradient unchanged") {
  if (!nccl_ready()) return;
  REQUIRE(dist::size() == 1);
  const std::vector<Shape> shapes = {{64, 3, 7, 7}, {64}, {512, 256, 3, 3}, {1}, {0}, {10, 512}};
  std::vector<Tensor> host, dev;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    host.push_back(test::random_tensor(shapes[i], 40 + i));
    dev.push_back(to_device(host.back()));
  }
  std::vector<Tensor*> grads;
  for (Tensor& d : dev) grads.push_back(&d);
  for (int step = 1; step <= 3; ++step) {  // the communicator and buffer of step 1 are reused
    cuda::world_gradient_sum(grads, "gradient all-reduce (step " + std::to_string(step) + ")");
    for (std::size_t i = 0; i < host.size(); ++i) {
      INFO("step " << step << ", gradient " << i << " " << host[i].desc());
      CHECK(test::bitwise_equal(dev[i].to(Device::cpu()), host[i]));
    }
  }
  require_guards_intact();
}
