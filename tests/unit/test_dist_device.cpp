// Which GPU a process takes (runtime/dist.h choose_device: DESIGN.md "Beyond one process", one
// device per rank, its node-local rank), the device labels announce() prints, and the registry of
// device all-reduces that train/train_loop.cpp consults. Pure logic: no GPU and no MPI needed.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

using namespace ae;

TEST_CASE("a single process takes GPU 0 whatever it sees") {
  CHECK(dist::choose_device(-1, false, 0, 1) == 0);
  CHECK(dist::choose_device(-1, false, 0, 8) == 0);
  // Not launched by mpirun/srun: a stale local rank (there is none outside MPI) is ignored.
  CHECK(dist::choose_device(-1, false, 3, 8) == 0);
}

TEST_CASE("under mpirun/srun a rank takes its node-local rank modulo the GPUs it sees") {
  for (int r = 0; r < 4; ++r) CHECK(dist::choose_device(-1, true, r, 4) == r);  // 4 ranks on 4 GPUs
  CHECK(dist::choose_device(-1, true, 3, 2) == 1);                              // 4 ranks on 2 GPUs
  CHECK(dist::choose_device(-1, true, 2, 2) == 0);
  CHECK(dist::choose_device(-1, true, 5, 1) == 0);  // srun --gpus-per-task=1: each rank sees its own GPU as 0
  CHECK(dist::choose_device(-1, true, 0, 8) == 0);
}

TEST_CASE("an explicit --device cuda:N wins over the local rank, and must exist") {
  CHECK(dist::choose_device(2, true, 1, 4) == 2);
  CHECK(dist::choose_device(0, true, 3, 4) == 0);
  CHECK(dist::choose_device(3, false, 0, 4) == 3);
  CHECK_THROWS_WITH_AS(dist::choose_device(4, false, 0, 4),
                       doctest::Contains("device cuda:4 was requested but this process sees 4 CUDA devices"), Error);
  CHECK_THROWS_WITH_AS(dist::choose_device(1, true, 0, 1), doctest::Contains("sees 1 CUDA device (cuda:0..0"), Error);
  CHECK_THROWS_AS(dist::choose_device(-1, true, 0, 0), Error);  // nothing to choose from
  CHECK_THROWS_AS(dist::choose_device(-1, true, -1, 2), Error);
}

TEST_CASE("device all-reduces are registered per device kind and found by train_loop") {
  CHECK(dist::device_allreduce(DeviceKind::cpu) == nullptr);
  // A registration without a function is no reducer (train_loop then takes the host path).
  dist::set_device_allreduce(DeviceKind::cpu, dist::DeviceAllReduce{"empty", {}});
  CHECK(dist::device_allreduce(DeviceKind::cpu) == nullptr);

  int calls = 0;
  std::string seen;
  dist::DeviceAllReduce r;
  r.name = "fake";
  r.sum = [&](const std::vector<Tensor*>& tensors, const std::string& what) {
    ++calls;
    seen = what;
    for (Tensor* t : tensors)
      for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] *= 2;  // two ranks holding equal values
  };
  dist::set_device_allreduce(DeviceKind::cpu, r);
  const dist::DeviceAllReduce* found = dist::device_allreduce(DeviceKind::cpu);
  REQUIRE(found != nullptr);
  CHECK(found->name == "fake");
  Tensor a = Tensor::full({3}, 1.5f);
  std::vector<Tensor*> list{&a};
  found->sum(list, "gradient all-reduce (step 1)");
  CHECK(calls == 1);
  CHECK(seen == "gradient all-reduce (step 1)");
  CHECK(a.f32()[2] == 3.0f);
  dist::set_device_allreduce(DeviceKind::cpu, {});  // leave the registry as found
  CHECK(dist::device_allreduce(DeviceKind::cpu) == nullptr);
}
