// CUDA MSE loss and optimiser steps against the CPU backend, with guarded device buffers.
#include <doctest/doctest.h>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"

using namespace ae;
using namespace ae::gputest;

namespace {

const std::vector<Shape> kShapes = {{1}, {7}, {3, 5}, {2, 13, 17, 3}, {1000, 3}, {64, 4099}};

void require_close(const Tensor& device_result, const Tensor& cpu_result, const test::Tolerance& tol,
                   const std::string& what) {
  REQUIRE(device_result.device().is_cuda());
  AE_REQUIRE_OK(test::compare(device_result.to(Device::cpu()), cpu_result, tol, what));
}

}  // namespace

TEST_CASE("mse loss forward is the CPU's value and bitwise repeatable; backward matches") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const Tensor pred = test::random_tensor(s, seed++), target = test::random_tensor(s, seed++, -2.0f, 2.0f);
    const Tensor dpred = to_device(pred), dtarget = to_device(target);
    const std::string where = " for shape " + shape_str(s);
    const Tensor loss = ops::mse_loss_forward(dpred, dtarget);
    require_close(loss, ops::mse_loss_forward(pred, target), {0, 1e-6, 1e-12}, "mse_loss_forward" + where);
    CHECK(ops::mse_loss_forward(dpred, dtarget).item() == loss.item());  // deterministic reduction
    for (float dloss : {1.0f, -0.25f}) {
      require_close(ops::mse_loss_backward(dpred, dtarget, dloss), ops::mse_loss_backward(pred, target, dloss),
                    {1e-7, 1e-6, 1e-12}, "mse_loss_backward" + where);
    }
    require_guards_intact();
  }
}

TEST_CASE("SGD steps (plain, momentum, dampening, nesterov, weight decay) match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  ops::SgdParams variants[4];
  variants[0].lr = 0.1f;
  variants[1].lr = 0.05f, variants[1].momentum = 0.9f;
  variants[2].lr = 0.05f, variants[2].momentum = 0.9f, variants[2].dampening = 0.3f, variants[2].weight_decay = 1e-2f;
  variants[3].lr = 0.02f, variants[3].momentum = 0.8f, variants[3].nesterov = true, variants[3].weight_decay = 5e-4f;
  uint64_t seed = 50;
  for (const Shape& s : {Shape{1}, Shape{3, 5}, Shape{2, 13, 17, 3}}) {
    for (const ops::SgdParams& p : variants) {
      Tensor w = test::random_tensor(s, seed++), buf = Tensor::zeros(s);
      Tensor dw = to_device(w), dbuf = to_device(buf);
      for (int64_t step = 1; step <= 4; ++step) {
        const Tensor g = test::random_tensor(s, seed++);
        ops::sgd_step(p, w, g, buf, step);
        ops::sgd_step(p, dw, to_device(g), dbuf, step);
      }
      const std::string what = "sgd momentum " + std::to_string(p.momentum) + " shape " + shape_str(s);
      require_close(dw, w, {1e-7, 1e-6, 1e-12}, what + " param");
      if (p.momentum != 0) require_close(dbuf, buf, {1e-7, 1e-6, 1e-12}, what + " buffer");
      require_guards_intact();
    }
  }
}

TEST_CASE("Adam and AdamW steps match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 500;
  for (const bool decoupled : {false, true}) {
    for (const float wd : {0.0f, 0.01f}) {
      ops::AdamParams p;
      p.lr = 1e-2f;
      p.weight_decay = wd;
      p.decoupled = decoupled;
      const Shape s = {3, 7, 11};
      Tensor w = test::random_tensor(s, seed++), m = Tensor::zeros(s), v = Tensor::zeros(s);
      Tensor dw = to_device(w), dm = to_device(m), dv = to_device(v);
      for (int64_t step = 1; step <= 5; ++step) {
        const Tensor g = test::random_tensor(s, seed++);
        ops::adam_step(p, w, g, m, v, step);
        ops::adam_step(p, dw, to_device(g), dm, dv, step);
      }
      const std::string what = std::string(decoupled ? "AdamW" : "Adam") + " wd " + std::to_string(wd);
      require_close(dw, w, {1e-6, 1e-5, 1e-10}, what + " param");
      require_close(dm, m, {1e-7, 1e-5, 1e-10}, what + " m");
      require_close(dv, v, {1e-7, 1e-5, 1e-10}, what + " v");
      require_guards_intact();
    }
  }
}
