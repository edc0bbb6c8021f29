// NCCL through dlopen (see nccl_comm.h for why it is not linked).
#include "kernels/cuda/nccl_comm.h"

#include "runtime/error.h"

#if defined(AE_HAVE_NCCL) && !defined(AE_EMULATED_DEVICE)
#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "kernels/cuda/runtime.h"
#endif

namespace ae::cuda::nccl {

#if defined(AE_HAVE_NCCL) && !defined(AE_EMULATED_DEVICE)

namespace {

// The NCCL functions aesthete calls, resolved from the loaded library. Their types come from
// nccl.h (decltype of the declarations; nothing here refers to a symbol at link time).
struct Api {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommGetAsyncError) comm_get_async_error = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) get_error_string = nullptr;
  std::string version;
};

template <typename F>
void resolve(void* lib, const char* symbol, const std::string& path, F& out) {
  void* p = dlsym(lib, symbol);
  AE_CHECK(p != nullptr, "NCCL library '" << path << "' has no " << symbol
                                          << " (NCCL 2.x is needed; nccl.h of this build is " << NCCL_MAJOR << "."
                                          << NCCL_MINOR << ")");
  out = reinterpret_cast<F>(p);
}

// Loaded once per process; the library stays loaded until exit (communicators may outlive any
// scope, and unloading NCCL while its proxy threads run is not supported).
const Api& api() {
  static std::once_flag once;
  static Api a;
  static std::string error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("AE_NCCL_LIBRARY"); env != nullptr && env[0] != '\0') candidates.push_back(env);
    candidates.push_back("libnccl.so.2");
#if defined(AE_NCCL_LIBRARY_PATH)
    candidates.push_back(AE_NCCL_LIBRARY_PATH);
#endif
    std::string tried;
    void* lib = nullptr;
    std::string path;
    for (const std::string& c : candidates) {
      lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) {
        path = c;
        break;
      }
      const char* why = dlerror();
      tried += "\n  " + c + ": " + (why != nullptr ? why : "not loadable");
    }
    if (lib == nullptr) {
      error = "the NCCL library (libnccl.so.2) could not be loaded; it is needed for the gradient all-reduce on GPUs. "
              "Tried:" + tried +
              "\nInstall NCCL (it ships with the CUDA toolkit), point AE_NCCL_LIBRARY at libnccl.so.2, or set "
              "AE_NCCL=off to sum gradients through host memory with MPI instead";
      return;
    }
    try {
      resolve(lib, "ncclGetVersion", path, a.get_version);
      resolve(lib, "ncclGetUniqueId", path, a.get_unique_id);
      resolve(lib, "ncclCommInitRank", path, a.comm_init_rank);
      resolve(lib, "ncclCommDestroy", path, a.comm_destroy);
      resolve(lib, "ncclCommGetAsyncError", path, a.comm_get_async_error);
      resolve(lib, "ncclAllReduce", path, a.all_reduce);
      resolve(lib, "ncclGetErrorString", path, a.get_error_string);
      int v = 0;
      if (a.get_version(&v) == ncclSuccess) {
        // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
        a.version = std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
      }
      a.version += " (" + path + ")";
    } catch (const Error& e) {
      error = e.what();
    }
  });
  AE_CHECK(error.empty(), error);
  return a;
}

void check(ncclResult_t r, const char* call, const std::string& what) {
  if (r == ncclSuccess) return;
  AE_FAIL(what << ": " << call << " failed: " << api().get_error_string(r) << " (ncclResult_t " << static_cast<int>(r)
               << "; NCCL_DEBUG=WARN shows NCCL's own reason)");
}

}  // namespace

bool compiled() { return true; }

std::string load_library() { return api().version; }

struct Communicator::Impl {
  ncclComm_t comm = nullptr;
};

Communicator::Communicator(int ranks, int rank, const std::function<void(void*, std::size_t)>& share_id,
                           const std::string& what)
    : impl_(std::make_unique<Impl>()), ranks_(ranks), rank_(rank) {
  AE_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, what << ": rank " << rank << " of " << ranks << " is not a rank");
  const Api& a = api();
  ncclUniqueId id{};
  if (rank == 0) check(a.get_unique_id(&id), "ncclGetUniqueId", what);
  share_id(&id, sizeof id);
  bind_thread_to_device();  // the communicator belongs to the device current on this thread
  check(a.comm_init_rank(&impl_->comm, ranks, id, rank), "ncclCommInitRank", what);
}

Communicator::~Communicator() {
  if (impl_ && impl_->comm != nullptr) (void)api().comm_destroy(impl_->comm);
}

void Communicator::allreduce_sum(float* data, std::size_t n, Stream stream, const std::string& what) {
  const Api& a = api();
  // An earlier asynchronous failure (a peer died, a network error) is reported here rather than
  // as a hang in the next call.
  ncclResult_t async = ncclSuccess;
  check(a.comm_get_async_error(impl_->comm, &async), "ncclCommGetAsyncError", what);
  check(async, "an earlier NCCL operation", what);
  check(a.all_reduce(data, data, n, ncclFloat32, ncclSum, impl_->comm, stream), "ncclAllReduce", what);
}

#else  // no NCCL in this build

bool compiled() { return false; }

namespace {
[[noreturn]] void not_built(const std::string& what) {
  AE_FAIL(what << ": this aesthete was built without NCCL (it needs a CUDA build with MPI that finds nccl.h)");
}
}  // namespace

std::string load_library() { not_built("loading NCCL"); }

struct Communicator::Impl {};

Communicator::Communicator(int, int, const std::function<void(void*, std::size_t)>&, const std::string& what) {
  not_built(what);
}
Communicator::~Communicator() = default;
void Communicator::allreduce_sum(float*, std::size_t, Stream, const std::string& what) { not_built(what); }

#endif

}  // namespace ae::cuda::nccl
