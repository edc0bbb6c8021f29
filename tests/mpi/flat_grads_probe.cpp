// A small program for tests/mpi/test_mpi_flat_grads.cpp, run under mpirun on the emulated device:
// the flat-buffer gradient sum of kernels/cuda/nccl_grads.h across real ranks (pack, collective,
// unpack), with MPI as the collective: on the emulated device, device memory is host memory, so
// MPI can sum the flat buffer where NCCL would on GPUs. Also: each rank's device choice (one
// emulated device: every rank takes cuda:0), its label in the start-up line, and that no NCCL
// reducer is registered for the emulated device (train_loop.cpp then takes the host path).
// Prints "flat probe ok" from rank 0 when every check passed; a failure ends the job with a message.
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/nccl_grads.h"
#include "kernels/cuda/runtime.h"
#include "runtime/dist.h"
#include "runtime/tensor.h"

namespace {

using namespace ae;

void expect(bool ok, const std::string& what) {
  if (!ok) dist::abort_job("flat probe: " + what);
}

// Small integers, so every sum over ranks is exact in float and the result is one exact value.
float value(int rank, std::size_t tensor, int64_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 7) - static_cast<int>(tensor));
}

}  // namespace

int main(int argc, char** argv) {
  dist::init(&argc, &argv);
  const cuda::DeviceInfo& info = cuda::initialize();
  expect(info.usable && info.emulated, "the emulated device is not usable: " + info.reason);
  expect(info.index == 0 && cuda::device_index() == 0, "rank took cuda:" + std::to_string(info.index));
  dist::announce(Device::cuda(info.index).str());
  expect(dist::device_allreduce(DeviceKind::cuda) == nullptr,
         "a device all-reduce is registered on the emulated device");

  const int r = dist::rank(), n = dist::size();
  const std::vector<Shape> shapes = {{64, 3, 7, 7}, {64}, {0}, {1}, {10, 512}, {3, 5, 1}};
  std::vector<Tensor> grads;
  for (std::size_t t = 0; t < shapes.size(); ++t) {
    Tensor h = Tensor::empty(shapes[t]);
    for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = value(r, t, i);
    grads.push_back(h.to(Device::cuda(0)));
  }
  std::vector<Tensor*> list;
  for (Tensor& g : grads) list.push_back(&g);
  int calls = 0;
  cuda::FlatAllReduce reducer([&](float* flat, int64_t count, cuda::Stream, const std::string& what) {
    ++calls;
    dist::allreduce_sum(flat, count, what);
  });
  for (int step = 1; step <= 2; ++step) {
    reducer.sum(list, "flat probe all-reduce (step " + std::to_string(step) + ")");
    for (std::size_t t = 0; t < grads.size(); ++t) {
      const Tensor h = grads[t].to(Device::cpu());
      for (int64_t i = 0; i < h.numel(); ++i) {
        float want = 0;
        for (int q = 0; q < n; ++q) want += value(q, t, i);
        if (step == 2) want *= static_cast<float>(n);  // step 2 sums the sums of step 1
        expect(h.f32()[i] == want, "step " + std::to_string(step) + ", tensor " + std::to_string(t) + " element " +
                                       std::to_string(i) + ": " + std::to_string(h.f32()[i]) + ", expected " +
                                       std::to_string(want));
      }
    }
  }
  expect(calls == 2, "the collective ran " + std::to_string(calls) + " times for 2 sums");
  dist::barrier("flat probe: barrier");
  if (r == 0)
    std::printf("flat probe ok: %d ranks on cuda:%d, %lld floats in one collective per sum\n", n, info.index,
                static_cast<long long>(reducer.flat_capacity()));
  dist::finalize();
  return 0;
}
