// CUDA MSE loss and optimiser steps against the CPU backend, with guarded device buffers.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

const std::vector<Shape> kShapes = {{1}, {7}, {3, 5}, {2, 13, 17, 3}, {1000, 3}, {64, 4099}};

}  // namespace

TEST_CASE("mse loss forward is the CPU's value and bitwise repeatable; backward matches") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const Tensor pred = test::random_tensor(s, seed++), target = test::random_tensor(s, seed++, -2.0f, 2.0f);
    const Tensor dpred = to_device(pred), dtarget = to_device(target);
    const std::string where = " for shape " + shape_str(s);
    const Tensor loss = ops::mse_loss_forward(dpred, dtarget);
    test::require_cuda_close(loss, ops::mse_loss_forward(pred, target), {0, 1e-6, 1e-12}, "mse_loss_forward" + where);
    CHECK(ops::mse_loss_forward(dpred, dtarget).item() == loss.item());  // deterministic reduction
    for (float dloss : {1.0f, -0.25f}) {
      test::require_cuda_close(ops::mse_loss_backward(dpred, dtarget, dloss),
                               ops::mse_loss_backward(pred, target, dloss), {1e-7, 1e-6, 1e-12},
                               "mse_loss_backward" + where);
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
      test::require_cuda_close(dw, w, {1e-7, 1e-6, 1e-12}, what + " param");
      if (p.momentum != 0) test::require_cuda_close(dbuf, buf, {1e-7, 1e-6, 1e-12}, what + " buffer");
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
      test::require_cuda_close(dw, w, {1e-6, 1e-5, 1e-10}, what + " param");
      test::require_cuda_close(dm, m, {1e-7, 1e-5, 1e-10}, what + " m");
      test::require_cuda_close(dv, v, {1e-7, 1e-5, 1e-10}, what + " v");
      require_guards_intact();
    }
  }
}

// ---------------------------------------------------------------- multi-tensor steps
namespace {

// More tensors than one launch takes (kMaxTensorsPerLaunch = 40 in optimizer.cu), sizes around
// the 1024-element block range and the 256-thread block, empty and one-element tensors between.
std::vector<Shape> awkward_shapes() {
  const std::vector<int64_t> sizes = {1, 0, 255, 256, 257, 1023, 1024, 1025, 2049, 3, 4099, 0, 31, 1, 777};
  std::vector<Shape> shapes;
  for (int repeat = 0; repeat < 6; ++repeat) {
    for (int64_t n : sizes) shapes.push_back(repeat % 2 ? Shape{n} : Shape{1, n});
  }
  shapes.push_back({64, 300});  // one tensor of many blocks
  return shapes;
}

// A parameter list with its state, on the CPU and as three device copies: one stepped by the
// multi-tensor op, one by the single-tensor op, and the CPU copy by the CPU backend.
struct Lists {
  std::vector<Tensor> cpu, multi, single;
};

Lists make_lists(const std::vector<Shape>& shapes, uint64_t seed, bool zero) {
  Lists l;
  for (const Shape& s : shapes) {
    const Tensor t = zero ? Tensor::zeros(s) : test::random_tensor(s, seed++);
    l.cpu.push_back(t.clone());
    l.multi.push_back(to_device(t));
    l.single.push_back(to_device(t));
  }
  return l;
}

std::vector<Tensor*> pointers(std::vector<Tensor>& tensors) {
  std::vector<Tensor*> out;
  for (Tensor& t : tensors) out.push_back(&t);
  return out;
}

std::vector<const Tensor*> const_pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> out;
  for (const Tensor& t : tensors) out.push_back(&t);
  return out;
}

// multi is bitwise single (same device element code), and both are within `tol` of the CPU.
void require_lists_match(const Lists& l, const test::Tolerance& tol, const std::string& what) {
  for (std::size_t i = 0; i < l.cpu.size(); ++i) {
    const std::string where = what + "[" + std::to_string(i) + "] shape " + shape_str(l.cpu[i].shape());
    INFO(where);
    REQUIRE(test::bitwise_equal(l.multi[i], l.single[i]));
    test::require_cuda_close(l.multi[i], l.cpu[i], tol, where);
  }
}

}  // namespace

TEST_CASE("multi-tensor Adam and AdamW are bitwise the single-tensor kernel over many awkward tensors") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<Shape> shapes = awkward_shapes();
  uint64_t seed = 7000;
  for (const bool decoupled : {false, true}) {
    ops::AdamParams p;
    p.lr = 1e-2f;
    p.weight_decay = 0.01f;
    p.decoupled = decoupled;
    Lists w = make_lists(shapes, seed, false), m = make_lists(shapes, 0, true), v = make_lists(shapes, 0, true);
    seed += shapes.size();
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<Tensor> g, dg;
      for (const Shape& s : shapes) {
        g.push_back(test::random_tensor(s, seed++));
        dg.push_back(to_device(g.back()));
      }
      ops::adam_step_multi(p, pointers(w.cpu), const_pointers(g), pointers(m.cpu), pointers(v.cpu), step);
      ops::adam_step_multi(p, pointers(w.multi), const_pointers(dg), pointers(m.multi), pointers(v.multi), step);
      for (std::size_t i = 0; i < shapes.size(); ++i) ops::adam_step(p, w.single[i], dg[i], m.single[i], v.single[i], step);
    }
    const std::string what = decoupled ? "AdamW " : "Adam ";
    require_lists_match(w, {1e-6, 1e-5, 1e-10}, what + "param");
    require_lists_match(m, {1e-7, 1e-5, 1e-10}, what + "m");
    require_lists_match(v, {1e-7, 1e-5, 1e-10}, what + "v");
    require_guards_intact();
  }
}

TEST_CASE("multi-tensor SGD (plain, momentum, nesterov) is bitwise the single-tensor kernel") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<Shape> shapes = awkward_shapes();
  ops::SgdParams variants[3];
  variants[0].lr = 0.1f;
  variants[1].lr = 0.05f, variants[1].momentum = 0.9f, variants[1].dampening = 0.3f, variants[1].weight_decay = 1e-2f;
  variants[2].lr = 0.02f, variants[2].momentum = 0.8f, variants[2].nesterov = true, variants[2].weight_decay = 5e-4f;
  uint64_t seed = 9000;
  for (const ops::SgdParams& p : variants) {
    Lists w = make_lists(shapes, seed, false), buf = make_lists(shapes, 0, true);
    seed += shapes.size();
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<Tensor> g, dg;
      for (const Shape& s : shapes) {
        g.push_back(test::random_tensor(s, seed++));
        dg.push_back(to_device(g.back()));
      }
      ops::sgd_step_multi(p, pointers(w.cpu), const_pointers(g), pointers(buf.cpu), step);
      ops::sgd_step_multi(p, pointers(w.multi), const_pointers(dg), pointers(buf.multi), step);
      for (std::size_t i = 0; i < shapes.size(); ++i) ops::sgd_step(p, w.single[i], dg[i], buf.single[i], step);
    }
    const std::string what = "sgd momentum " + std::to_string(p.momentum) + " ";
    require_lists_match(w, {1e-7, 1e-6, 1e-12}, what + "param");
    require_lists_match(buf, {1e-7, 1e-6, 1e-12}, what + "buffer");
    require_guards_intact();
  }
}

TEST_CASE("multi-tensor steps refuse a list that mixes devices, naming the entry") {
  AE_GPU_TEST_PRELUDE();
  Tensor p0 = to_device(Tensor::zeros({3})), p1 = to_device(Tensor::zeros({3}));
  const Tensor g0 = to_device(Tensor::zeros({3})), host_grad = Tensor::zeros({3});
  Tensor m0 = to_device(Tensor::zeros({3})), m1 = to_device(Tensor::zeros({3}));
  Tensor v0 = to_device(Tensor::zeros({3})), v1 = to_device(Tensor::zeros({3}));
  const std::string message = test::error_of(
      [&] { ops::adam_step_multi({}, {&p0, &p1}, {&g0, &host_grad}, {&m0, &m1}, {&v0, &v1}, 1); });
  AE_CHECK_CONTAINS(message, "adam_step_multi");
  AE_CHECK_CONTAINS(message, "grads[1]");
  AE_CHECK_CONTAINS(message, "one device");
}
