// Synchronised BatchNorm (--sync-bn, kernels/batchnorm_sync.h) on the CUDA backend. Two ranks in
// one process: rank 0 runs the CUDA training forward/backward on shard A on the test's thread,
// rank 1 the CPU one on shard B on a second thread, and the installed reducer is a two-party
// all-reduce between them (each rank's vector summed in rank order, the same totals to both, as
// MPI's is). Both ranks must then compute what one process computes on the whole batch A then B:
// y, save_mean, save_invstd, the running statistics and dx of their rows against the CPU op on
// the concatenated batch; dgamma/dbeta stay each rank's own sums. The shard table has awkward
// shapes: uneven shards, ranks with one row (allowed only under a reducer), NHWC and [N,C],
// 1..256 channels, a large common offset (two-pass variance with the global mean) and shards large
// enough to split the per-channel reduction into several row chunks. The reducer counts its calls
// and their lengths (the sync path really ran, with the CPU backend's layout), and a one-rank
// reducer that changes nothing must leave every CUDA output bit for bit what it is without one.
// Last, the same through MPI: this binary runs itself as two ranks under mpirun (when the build has
// MPI and mpirun is on the PATH), each rank on the device, with train_loop.cpp's reducer
// (dist::allreduce_sum).
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "kernels/batchnorm_sync.h"
#include "kernels/cuda/channel_reduce_layout.h"
#include "kernels/ops.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/run_command.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// The rank the calling thread plays in TwoRanks (-1: none).
thread_local int t_rank = -1;

// A two-party all-reduce for the two threads of a test: every call blocks until both ranks have
// called, then both get the sum rank 0 + rank 1 (in that order: the same bits on both ranks).
// Records each rank's call lengths. A rank that waits more than 60 s (the other one failed) throws.
class TwoRanks {
 public:
  void reduce(double* sums, int64_t n) {
    const int rank = t_rank;
    AE_CHECK(rank == 0 || rank == 1, "TwoRanks: reducer called from a thread that is no rank");
    std::unique_lock<std::mutex> lock(mu_);
    calls_[rank].push_back(n);
    in_[rank].assign(sums, sums + n);
    const uint64_t round = round_;
    if (++arrived_ == 2) {
      AE_CHECK(in_[0].size() == in_[1].size(), "TwoRanks: the ranks reduce " << in_[0].size() << " and "
                                                                             << in_[1].size() << " values");
      out_.resize(in_[0].size());
      for (std::size_t i = 0; i < out_.size(); ++i) out_[i] = in_[0][i] + in_[1][i];
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      AE_CHECK(cv_.wait_for(lock, std::chrono::seconds(60), [&] { return round_ != round; }),
               "TwoRanks: rank " << rank << " waited 60 s for the other rank");
    }
    std::memcpy(sums, out_.data(), static_cast<std::size_t>(n) * sizeof(double));
  }
  const std::vector<int64_t>& calls(int rank) const { return calls_[rank]; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> in_[2], out_;
  std::vector<int64_t> calls_[2];
  int arrived_ = 0;
  uint64_t round_ = 0;
};

// Runs rank 0's work on this thread and rank 1's on a second one, both under `ranks` as the
// installed reducer; rethrows the first error either rank threw.
void run_two_ranks(TwoRanks& ranks, const std::function<void()>& rank0, const std::function<void()>& rank1) {
  const ops::ScopedBatchNormSync sync([&ranks](double* sums, int64_t n) { ranks.reduce(sums, n); });
  std::exception_ptr error1;
  std::thread other([&] {
    t_rank = 1;
    try {
      rank1();
    } catch (...) {
      error1 = std::current_exception();
    }
  });
  std::exception_ptr error0;
  t_rank = 0;
  try {
    rank0();
  } catch (...) {
    error0 = std::current_exception();
  }
  t_rank = -1;
  other.join();
  if (error0) std::rethrow_exception(error0);
  if (error1) std::rethrow_exception(error1);
}

struct Case {
  Shape a, b;    // the two shards: same trailing dims, any leading batch
  float offset;  // added to every x: |mean| >> std tests the variance about the global mean
};

const Case kCases[] = {
    {{2, 5, 7, 3}, {1, 5, 7, 3}, 0.0f},      {{1, 1, 1, 64}, {3, 1, 1, 64}, 0.0f},
    {{1, 256}, {3, 256}, 0.0f},              {{3, 5}, {4, 5}, 0.0f},
    {{1, 13, 17, 3}, {2, 13, 17, 3}, 50.0f}, {{2, 33, 35, 3}, {1, 33, 35, 3}, 0.0f},
    {{1, 65, 67, 1}, {1, 65, 67, 1}, 3.0f},  {{2, 7, 5, 64}, {1, 7, 5, 64}, 100.0f},
    {{1, 2, 2, 5}, {2, 2, 2, 5}, 0.0f},      {{1, 3}, {1, 3}, 1.0f},
};

std::string describe(const char* what, const Case& c) {
  return std::string(what) + " shards " + shape_str(c.a) + " + " + shape_str(c.b) + " offset " +
         std::to_string(c.offset);
}

Tensor input_for(const Shape& shape, float offset, uint64_t seed) {
  Tensor x = test::random_tensor(shape, seed, -2.0f, 2.0f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] += offset;
  return x;
}

// a then b along the first dimension (host tensors).
Tensor concat_rows(const Tensor& a, const Tensor& b) {
  Shape s = a.shape();
  s[0] += b.dim(0);
  std::vector<float> v = a.to_vector();
  const std::vector<float> w = b.to_vector();
  v.insert(v.end(), w.begin(), w.end());
  return Tensor::from_vector(s, v);
}

// Elements [begin, begin + numel(shape)) of a host tensor, as `shape`.
Tensor part(const Tensor& t, int64_t begin, const Shape& shape) {
  const std::vector<float> v = t.to_vector();
  return Tensor::from_vector(shape, std::vector<float>(v.begin() + begin, v.begin() + begin + shape_numel(shape)));
}

// The sync path differs from one process on the whole batch only in the order of the double
// additions of the per-channel sums (shard totals added in rank order), a relative ~1e-16 that can
// move a float-rounded statistic by one ulp: the CUDA-vs-CPU bounds of test_cuda_batchnorm.cpp.
constexpr test::Tolerance kElementwise{1e-5, 1e-4, 1e-10};
constexpr test::Tolerance kStatistics{1e-6, 1e-5, 1e-12};
constexpr test::Tolerance kChannelSums{1e-4, 1e-5, 1e-11};

}  // namespace

TEST_CASE("two ranks (CUDA shard A, CPU shard B) under a reducer compute one process's batch A then B") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 3000;
  bool chunked = false;
  for (const Case& c : kCases) {
    const int64_t ch = c.a.back();
    const int64_t rows_a = shape_numel(c.a) / ch;
    chunked = chunked || cuda::channel_reduce_layout(rows_a, ch).row_chunks > 1;
    const ops::BatchNormParams p{1e-5f, 0.1f};
    const Tensor xa = input_for(c.a, c.offset, seed++), xb = input_for(c.b, c.offset, seed++);
    const Tensor dya = test::random_tensor(c.a, seed++), dyb = test::random_tensor(c.b, seed++);
    const Tensor gamma = test::random_tensor({ch}, seed++, 0.5f, 1.5f);
    const Tensor beta = test::random_tensor({ch}, seed++);
    const Tensor rm0 = test::random_tensor({ch}, seed++), rv0 = test::random_tensor({ch}, seed++, 0.5f, 2.0f);

    // One process on the whole batch (CPU, no reducer).
    const Tensor x = concat_rows(xa, xb), dy = concat_rows(dya, dyb);
    Tensor rm_ref = rm0.clone(), rv_ref = rv0.clone();
    const ops::BatchNormTrainOut ref = ops::batchnorm_forward_train(p, x, gamma, beta, rm_ref, rv_ref);
    const ops::BatchNormGrads gref = ops::batchnorm_backward_train(x, dy, gamma, ref.save_mean, ref.save_invstd);
    // Each rank's dgamma/dbeta: its own rows' sums with the whole batch's statistics.
    const ops::BatchNormGrads gref_a = ops::batchnorm_backward_train(xa, dya, gamma, ref.save_mean, ref.save_invstd);
    const ops::BatchNormGrads gref_b = ops::batchnorm_backward_train(xb, dyb, gamma, ref.save_mean, ref.save_invstd);

    // Rank 0 on the device, rank 1 on the CPU.
    const Tensor xa_d = to_device(xa), dya_d = to_device(dya), gamma_d = to_device(gamma), beta_d = to_device(beta);
    Tensor rm_a = to_device(rm0), rv_a = to_device(rv0), rm_b = rm0.clone(), rv_b = rv0.clone();
    ops::BatchNormTrainOut fa, fb;
    ops::BatchNormGrads ga, gb;
    TwoRanks ranks;
    run_two_ranks(
        ranks,
        [&] {
          fa = ops::batchnorm_forward_train(p, xa_d, gamma_d, beta_d, rm_a, rv_a);
          ga = ops::batchnorm_backward_train(xa_d, dya_d, gamma_d, fa.save_mean, fa.save_invstd);
        },
        [&] {
          fb = ops::batchnorm_forward_train(p, xb, gamma, beta, rm_b, rv_b);
          gb = ops::batchnorm_backward_train(xb, dyb, gamma, fb.save_mean, fb.save_invstd);
        });

    // The sync path ran on both ranks, with the CPU backend's calls: forward C+1 twice (sum of x,
    // squared deviations), backward 2C+1 once (sum(dy*xhat), sum(dy)); the count is the last value.
    const std::vector<int64_t> expected_calls{ch + 1, ch + 1, 2 * ch + 1};
    CHECK_MESSAGE(ranks.calls(0) == expected_calls, describe("rank 0 (cuda) reducer calls", c));
    CHECK_MESSAGE(ranks.calls(1) == expected_calls, describe("rank 1 (cpu) reducer calls", c));

    const int64_t na = xa.numel();
    test::require_cuda_close(fa.y, part(ref.y, 0, c.a), kElementwise, describe("rank 0 y", c));
    test::require_cuda_close(fa.save_mean, ref.save_mean, kStatistics, describe("rank 0 save_mean", c));
    test::require_cuda_close(fa.save_invstd, ref.save_invstd, kStatistics, describe("rank 0 save_invstd", c));
    test::require_cuda_close(rm_a, rm_ref, kStatistics, describe("rank 0 running_mean", c));
    test::require_cuda_close(rv_a, rv_ref, kStatistics, describe("rank 0 running_var", c));
    test::require_cuda_close(ga.dx, part(gref.dx, 0, c.a), kElementwise, describe("rank 0 dx", c));
    test::require_cuda_close(ga.dgamma, gref_a.dgamma, kChannelSums, describe("rank 0 dgamma (own rows)", c));
    test::require_cuda_close(ga.dbeta, gref_a.dbeta, kChannelSums, describe("rank 0 dbeta (own rows)", c));
    // Rank 1 is the CPU backend's sync path, checked here so the two-rank harness is checked too.
    test::require_close(fb.y, part(ref.y, na, c.b), kElementwise, describe("rank 1 y", c));
    test::require_close(fb.save_invstd, ref.save_invstd, kStatistics, describe("rank 1 save_invstd", c));
    test::require_close(rv_b, rv_ref, kStatistics, describe("rank 1 running_var", c));
    test::require_close(gb.dx, part(gref.dx, na, c.b), kElementwise, describe("rank 1 dx", c));
    test::require_close(gb.dgamma, gref_b.dgamma, kChannelSums, describe("rank 1 dgamma (own rows)", c));
    // Both ranks got the same totals from the reducer: their saved statistics (one division, and
    // 1/sqrt in double, each rounded once to float) are the same floats.
    CHECK_MESSAGE(test::bitwise_equal(fa.save_mean, fb.save_mean), describe("rank 0 vs rank 1 save_mean", c));
    CHECK_MESSAGE(test::bitwise_equal(fa.save_invstd, fb.save_invstd), describe("rank 0 vs rank 1 save_invstd", c));
    require_guards_intact();
  }
  CHECK_MESSAGE(chunked, "no shard split the per-channel reduction into several chunks");
}

TEST_CASE("a one-rank reducer changes no bit of the CUDA BatchNorm; no reducer, no call") {
  AE_GPU_TEST_PRELUDE();
  for (const Shape& shape : {Shape{2, 33, 35, 3}, Shape{2, 13, 17, 64}, Shape{2, 256}, Shape{1, 7, 5, 5}}) {
    INFO("x " << shape_str(shape));
    const int64_t ch = shape.back();
    const ops::BatchNormParams p{1e-5f, 0.1f};
    const Tensor x = to_device(input_for(shape, 7.0f, 21));
    const Tensor dy = to_device(test::random_tensor(shape, 22));
    const Tensor gamma = to_device(test::random_tensor({ch}, 23, 0.5f, 1.5f));
    const Tensor beta = to_device(test::random_tensor({ch}, 24));
    ops::BatchNormTrainOut fwd[2];
    ops::BatchNormGrads bwd[2];
    Tensor rm[2], rv[2];
    int calls = 0;
    for (int run = 0; run < 2; ++run) {
      rm[run] = to_device(test::random_tensor({ch}, 25));
      rv[run] = to_device(test::random_tensor({ch}, 26, 0.5f, 2.0f));
      std::optional<ops::ScopedBatchNormSync> sync;  // run 1: one rank, the sums unchanged
      if (run == 1) sync.emplace([&calls](double*, int64_t) { ++calls; });
      fwd[run] = ops::batchnorm_forward_train(p, x, gamma, beta, rm[run], rv[run]);
      bwd[run] = ops::batchnorm_backward_train(x, dy, gamma, fwd[run].save_mean, fwd[run].save_invstd);
      if (run == 0) CHECK(calls == 0);
    }
    CHECK(calls == 3);
    CHECK(test::bitwise_equal(fwd[0].y, fwd[1].y));
    CHECK(test::bitwise_equal(fwd[0].save_mean, fwd[1].save_mean));
    CHECK(test::bitwise_equal(fwd[0].save_invstd, fwd[1].save_invstd));
    CHECK(test::bitwise_equal(rm[0], rm[1]));
    CHECK(test::bitwise_equal(rv[0], rv[1]));
    CHECK(test::bitwise_equal(bwd[0].dx, bwd[1].dx));
    CHECK(test::bitwise_equal(bwd[0].dgamma, bwd[1].dgamma));
    CHECK(test::bitwise_equal(bwd[0].dbeta, bwd[1].dbeta));
    // Eval mode never calls the reducer.
    const ops::ScopedBatchNormSync sync([&calls](double*, int64_t) { ++calls; });
    (void)ops::batchnorm_forward_eval(p, x, gamma, beta, rm[0], rv[0]);
    (void)ops::batchnorm_backward_eval(p, x, dy, gamma, rm[0], rv[0]);
    CHECK(calls == 3);
  }
  require_guards_intact();
}

TEST_CASE("a CUDA rank with one row trains under a reducer; a whole batch of one row is refused") {
  AE_GPU_TEST_PRELUDE();
  const ops::BatchNormParams p;
  const Tensor x = to_device(test::random_tensor({1, 4}, 31));
  const Tensor gamma = to_device(test::random_tensor({4}, 32, 0.5f, 1.5f));
  const Tensor beta = to_device(test::random_tensor({4}, 33));
  Tensor rm = Tensor::zeros({4}, DType::f32, device()), rv = Tensor::full({4}, 1.0f, device());
  // Without a reducer one row is refused before the backend runs; with a reducer whose total is
  // still one row the backend refuses once the counts are summed.
  test::require_error([&] { (void)ops::batchnorm_forward_train(p, x, gamma, beta, rm, rv); },
                      {"batchnorm_forward_train", "at least 2"});
  const ops::ScopedBatchNormSync sync([](double*, int64_t) {});
  test::require_error([&] { (void)ops::batchnorm_forward_train(p, x, gamma, beta, rm, rv); },
                      {"batchnorm_forward_train", "1 value(s) per channel over all processes", "at least 2"});
  require_guards_intact();
}

namespace {

constexpr const char* kMpiCase = "two MPI ranks on the device normalise with the whole batch (dist::allreduce_sum)";
constexpr const char* kRankEnv = "AE_TEST_BN_SYNC_RANK";

// One rank of the mpirun run below: the global batch (the same on every rank), this rank's rows
// on the device under train_loop.cpp's reducer, checked against the CPU op on the whole batch.
void run_as_rank() {
  dist::init(nullptr, nullptr);
  const int rank = dist::rank(), size = dist::size();
  REQUIRE(size == 2);
  if (!device_ready()) dist::abort_job("bn sync rank: no device");
  const Shape global{5, 6, 7, 16};  // rank 0: rows 0-1 of the batch, rank 1: rows 2-4
  const int64_t ch = global.back(), first = rank == 0 ? 0 : 2, count = rank == 0 ? 2 : 3;
  const Shape mine{count, global[1], global[2], global[3]};
  const int64_t begin = first * shape_numel(mine) / count;
  const ops::BatchNormParams p{1e-5f, 0.1f};
  const Tensor x = input_for(global, 20.0f, 41), dy = test::random_tensor(global, 42);
  const Tensor gamma = test::random_tensor({ch}, 43, 0.5f, 1.5f), beta = test::random_tensor({ch}, 44);
  Tensor rm_ref = Tensor::zeros({ch}), rv_ref = Tensor::full({ch}, 1.0f);
  const ops::BatchNormTrainOut ref = ops::batchnorm_forward_train(p, x, gamma, beta, rm_ref, rv_ref);
  const ops::BatchNormGrads gref = ops::batchnorm_backward_train(x, dy, gamma, ref.save_mean, ref.save_invstd);

  Tensor rm = Tensor::zeros({ch}, DType::f32, device()), rv = Tensor::full({ch}, 1.0f, device());
  const Tensor xd = to_device(part(x, begin, mine)), dyd = to_device(part(dy, begin, mine));
  const Tensor gd = to_device(gamma);
  ops::BatchNormTrainOut f;
  ops::BatchNormGrads g;
  int calls = 0;
  {
    const ops::ScopedBatchNormSync sync([&calls](double* sums, int64_t n) {
      ++calls;
      dist::allreduce_sum(sums, n, "BatchNorm statistics all-reduce");
    });
    f = ops::batchnorm_forward_train(p, xd, gd, to_device(beta), rm, rv);
    g = ops::batchnorm_backward_train(xd, dyd, gd, f.save_mean, f.save_invstd);
  }
  CHECK(calls == 3);
  const std::string who = "rank " + std::to_string(rank);
  test::require_cuda_close(f.y, part(ref.y, begin, mine), kElementwise, who + " y");
  test::require_cuda_close(f.save_mean, ref.save_mean, kStatistics, who + " save_mean");
  test::require_cuda_close(f.save_invstd, ref.save_invstd, kStatistics, who + " save_invstd");
  test::require_cuda_close(rm, rm_ref, kStatistics, who + " running_mean");
  test::require_cuda_close(rv, rv_ref, kStatistics, who + " running_var");
  test::require_cuda_close(g.dx, part(gref.dx, begin, mine), kElementwise, who + " dx");
  require_guards_intact();
  std::printf("bn sync %s of %d ok\n", who.c_str(), size);
  std::fflush(stdout);
  dist::finalize();
}

}  // namespace

TEST_CASE(kMpiCase) {
  if (std::getenv(kRankEnv) != nullptr) {
    run_as_rank();
    return;
  }
  AE_GPU_TEST_PRELUDE();
  const test::CommandResult where = test::run_command("command -v mpirun");
  std::string mpirun = where.out.substr(0, where.out.find('\n'));
  if (!dist::built_with_mpi() || where.exit_code != 0 || mpirun.empty()) {
    MESSAGE("not run: this build has no MPI or mpirun is not on the PATH");
    return;
  }
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const test::CommandResult r =
      test::run_command(std::string(kRankEnv) + "=1 AE_COLLECTIVE_TIMEOUT=120 OMP_NUM_THREADS=1 " + mpirun +
                        " --allow-run-as-root --oversubscribe --bind-to none -np 2 " + self + " '--test-case=" +
                        kMpiCase + "'");
  INFO(r.out);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("bn sync rank 0 of 2 ok") != std::string::npos);
  CHECK(r.out.find("bn sync rank 1 of 2 ok") != std::string::npos);
}
