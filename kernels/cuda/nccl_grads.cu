// The flat-buffer gradient all-reduce (see nccl_grads.h).
#include "kernels/cuda/nccl_grads.h"

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/multi_tensor.h"
#include "kernels/cuda/nccl_comm.h"
#include "kernels/cuda/runtime.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;
// The table travels as a kernel argument (no device-side table to upload): 48 entries of 32 bytes
// stay well inside CUDA's 4 KiB parameter limit. Longer lists launch once per 48 tensors.
constexpr int kMaxParts = 48;
// Every block copies one contiguous range of this many elements of one tensor, so the blocks of a
// launch are spread over the tensors in proportion to their sizes (a 2.4 M-element conv weight
// and a 64-element BatchNorm bias share one launch without idle blocks).
constexpr int64_t kElementsPerBlock = 4 * kThreads;

struct PartTable {
  float* tensor[kMaxParts];
  int64_t offset[kMaxParts];  // where the tensor starts in the flat buffer
  int64_t numel[kMaxParts];
  // Part k owns blocks [first_block[k], first_block[k + 1]); empty tensors are never entered.
  int64_t first_block[kMaxParts + 1];
  int count;
};
static_assert(sizeof(PartTable) < 2048, "the part table must stay well inside the kernel parameter limit");

__global__ void flat_copy_kernel(PartTable t, float* flat, bool to_flat) {
  const int64_t block = blockIdx.x;
  const int k = owner_of_block(t.first_block, t.count, block);
  float* part = t.tensor[k];
  float* window = flat + t.offset[k];
  const int64_t begin = (block - t.first_block[k]) * kElementsPerBlock;
  const int64_t end = begin + kElementsPerBlock < t.numel[k] ? begin + kElementsPerBlock : t.numel[k];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    if (to_flat) {
      window[i] = part[i];
    } else {
      part[i] = window[i];
    }
  }
}

template <typename TensorPtr>
void flat_copy(const std::vector<TensorPtr>& parts, float* flat, bool to_flat, Stream stream) {
  PartTable t{};
  int64_t at = 0;
  auto flush = [&] {
    if (t.count > 0) {
      AE_LAUNCH(flat_copy_kernel, dim3(static_cast<unsigned>(t.first_block[t.count])), dim3(kThreads), 0, stream, t,
                flat, to_flat);
    }
    t = PartTable{};
  };
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Tensor& x = *parts[i];
    AE_CHECK(x.dtype() == DType::f32 && x.device().is_cuda(),
             "flat gradient buffer: part " << i << " is " << x.desc() << "; float32 tensors on the CUDA device only");
    const int64_t n = x.numel();
    if (n > 0) {
      const int64_t blocks = (n + kElementsPerBlock - 1) / kElementsPerBlock;
      AE_CHECK(blocks <= kMaxBlocksPerLaunch, "flat gradient buffer: part " << i << " has " << n
                                                                           << " elements, too many for one launch");
      if (t.count == kMaxParts || t.first_block[t.count] + blocks > kMaxBlocksPerLaunch) flush();
      const int k = t.count++;
      t.tensor[k] = x.f32();
      t.offset[k] = at;
      t.numel[k] = n;
      t.first_block[k + 1] = t.first_block[k] + blocks;
    }
    at += n;
  }
  flush();
}

}  // namespace

void pack_flat(const std::vector<const Tensor*>& parts, float* flat, Stream stream) {
  flat_copy(parts, flat, true, stream);
}

void unpack_flat(const float* flat, const std::vector<Tensor*>& parts, Stream stream) {
  // The kernel reads `flat` when unpacking; one kernel serves both directions.
  flat_copy(parts, const_cast<float*>(flat), false, stream);
}

FlatAllReduce::FlatAllReduce(Collective collective) : collective_(std::move(collective)) {
  watch_key_ = "flat all-reduce " + std::to_string(reinterpret_cast<std::uintptr_t>(this));
}

FlatAllReduce::~FlatAllReduce() { dist::unwatch_async(watch_key_); }

void FlatAllReduce::sum(const std::vector<Tensor*>& tensors, const std::string& what) {
  int64_t total = 0;
  for (const Tensor* t : tensors) total += t->numel();
  if (total == 0) return;
  if (flat_capacity() < total) flat_ = Tensor::empty({total}, DType::f32, Device::cuda(device_index()));
  const Stream compute = backend_stream(), comm = comm_.get();
  pack_flat(std::vector<const Tensor*>(tensors.begin(), tensors.end()), flat_.f32(), compute);
  packed_.record(compute);  // after the backward and the pack, in the compute stream's order
  packed_.order_before(comm);
  collective_(flat_.f32(), total, comm, what);
  reduced_.record(comm);
  dist::watch_async(watch_key_, what + " (queued on the GPU)", [this] { return reduced_.finished(); });
  reduced_.order_before(compute);  // the unpack and the optimiser step wait for the sums
  unpack_flat(flat_.f32(), tensors, compute);
  // The flat buffer is reused by the next sum, whose pack is queued on the compute stream after
  // this unpack, and whose collective waits for that pack: no extra ordering is needed.
}

bool nccl_available() {
#if defined(AE_EMULATED_DEVICE)
  return false;
#else
  return nccl::compiled();
#endif
}

void world_gradient_sum(const std::vector<Tensor*>& tensors, const std::string& what) {
  // Made at the first sum (every rank reaches it at the same step) and never destroyed: at exit
  // MPI is finalised and the CUDA context torn down before static destructors would run
  // ncclCommDestroy, which then may hang; the process's end frees both.
  static nccl::Communicator* comm = nullptr;
  static FlatAllReduce* reducer = nullptr;
  if (reducer == nullptr) {
    const std::string version = nccl::load_library();
    comm = new nccl::Communicator(
        dist::size(), dist::rank(),
        [](void* id, std::size_t bytes) {
          dist::broadcast(id, static_cast<int64_t>(bytes), 0, "NCCL start-up (unique id broadcast)");
        },
        "NCCL start-up (ncclCommInitRank, rank " + std::to_string(dist::rank()) + " on cuda:" +
            std::to_string(device_index()) +
            "; NCCL refuses two ranks on one GPU: run at most as many ranks per node as GPUs, or set AE_NCCL=off)");
    reducer = new FlatAllReduce([c = comm](float* flat, int64_t n, Stream stream, const std::string& call) {
      c->allreduce_sum(flat, static_cast<std::size_t>(n), stream, call);
    });
    AE_INFO("gradients are summed over " << dist::size() << " ranks with NCCL " << version
                                         << ": one all-reduce of one flat buffer per step, on its own stream");
  }
  reducer->sum(tensors, what);
}

}  // namespace ae::cuda
