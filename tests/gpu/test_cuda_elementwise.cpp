// CUDA elementwise and activation ops (and the f32 <-> bf16 cast, bit for bit) against the CPU
// backend over awkward shapes, with every device buffer guarded and every output poisoned (NaN)
// until the kernel writes it.
#include <doctest/doctest.h>

#include <limits>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

const std::vector<Shape> kShapes = {{1}, {7}, {3, 5}, {1, 1, 1, 33}, {2, 13, 17, 3}, {5, 7, 11, 9}, {0}};

// Elementwise results are the same float operations on both devices; a GPU may fuse a*b+c.
const test::Tolerance kTight{1e-6, 1e-6, 1e-12};

}  // namespace

TEST_CASE("add, scale, add_inplace and add_relu match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const Tensor a = test::random_tensor(s, seed++), b = test::random_tensor(s, seed++);
    const Tensor da = to_device(a), db = to_device(b);
    const std::string where = " for shape " + shape_str(s);
    test::require_cuda_close(ops::add(da, db), ops::add(a, b), kTight, "add" + where);
    test::require_cuda_close(ops::scale(da, -2.5f), ops::scale(a, -2.5f), kTight, "scale" + where);
    test::require_cuda_close(ops::add_relu(da, db), ops::add_relu(a, b), kTight, "add_relu" + where);

    Tensor acc = a.clone(), dacc = to_device(a);
    ops::add_inplace(acc, b, 0.75f);
    ops::add_inplace(dacc, db, 0.75f);
    test::require_cuda_close(dacc, acc, kTight, "add_inplace" + where);
    ops::add_inplace(acc, acc, -0.5f);  // aliasing a += s*a is allowed
    ops::add_inplace(dacc, dacc, -0.5f);
    test::require_cuda_close(dacc, acc, kTight, "add_inplace aliased" + where);
    require_guards_intact();
  }
}

TEST_CASE("views: ops on a slice touch exactly that slice") {
  AE_GPU_TEST_PRELUDE();
  const Tensor a = test::random_tensor({6, 5}, 3), b = test::random_tensor({2, 5}, 4);
  Tensor da = to_device(a);
  Tensor dslice = da.rows(2, 4);
  ops::add_inplace(dslice, to_device(b), 1.0f);
  Tensor expected = a.clone();
  Tensor slice = expected.rows(2, 4);
  ops::add_inplace(slice, b, 1.0f);
  test::require_cuda_close(da, expected, kTight, "add_inplace on rows [2,4)");
  require_guards_intact();
}

TEST_CASE("a grid-stride loop covers tensors larger than the capped grid") {
  AE_GPU_TEST_PRELUDE();
  const Shape s = {4096 * 256 + 777};  // more elements than 4096 blocks x 256 threads
  const Tensor a = test::random_tensor(s, 8), b = test::random_tensor(s, 9);
  test::require_cuda_close(ops::add(to_device(a), to_device(b)), ops::add(a, b), kTight, "add over " + shape_str(s));
  require_guards_intact();
}

TEST_CASE("relu forward and backward match the CPU backend (0 at the kink)") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    Tensor x = test::random_tensor(s, seed++);
    if (x.numel() > 2) x.f32()[1] = 0.0f;  // exactly at the kink
    const Tensor dy = test::random_tensor(s, seed++);
    const Tensor y = ops::relu_forward(x);
    const Tensor dev_y = ops::relu_forward(to_device(x));
    test::require_cuda_close(dev_y, y, kTight, "relu_forward for " + shape_str(s));
    test::require_cuda_close(ops::relu_backward(dev_y, to_device(dy)), ops::relu_backward(y, dy), kTight,
                             "relu_backward for " + shape_str(s));
    require_guards_intact();
  }
}

TEST_CASE("dropout draws the CPU's mask from the same Philox stream") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 200;
  for (const Shape& s : kShapes) {
    for (const float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
      ops::DropoutParams params;
      params.p = p;
      params.seed = 0x1234567ull + seed;
      params.offset = 1000 * seed + 3;  // an offset not a multiple of 4 starts mid-Philox-block
      const Tensor x = test::random_tensor(s, seed++), dy = test::random_tensor(s, seed++);
      const ops::DropoutOut cpu = ops::dropout_forward(params, x);
      const ops::DropoutOut gpu = ops::dropout_forward(params, to_device(x));
      const std::string what = "dropout p=" + std::to_string(p) + " shape " + shape_str(s);
      REQUIRE(gpu.mask.dtype() == DType::u8);
      INFO(what);
      REQUIRE(test::bitwise_equal(gpu.mask, cpu.mask));
      test::require_cuda_close(gpu.y, cpu.y, kTight, what);
      test::require_cuda_close(ops::dropout_backward(params, gpu.mask, to_device(dy)),
                               ops::dropout_backward(params, cpu.mask, dy), kTight, "backward of " + what);
      require_guards_intact();
    }
  }
}

TEST_CASE("dropout reads a device_offset on the device when it runs, as the CPU adds it") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = test::random_tensor({6, 40}, 31);
  ops::DropoutParams params;
  params.p = 0.5f;
  params.seed = 7;
  params.offset = 11;
  for (const int64_t step_offset : {int64_t{1}, int64_t{5} << 32}) {
    INFO("device offset " << step_offset);
    Tensor host_offset = Tensor::zeros({1}, DType::i64);
    *host_offset.data<int64_t>() = step_offset;
    ops::DropoutParams on_device = params;
    on_device.device_offset = to_device(host_offset);
    ops::DropoutParams on_host = params;
    on_host.device_offset = host_offset;
    const ops::DropoutOut gpu = ops::dropout_forward(on_device, to_device(x));
    const ops::DropoutOut cpu = ops::dropout_forward(on_host, x);
    REQUIRE(test::bitwise_equal(gpu.mask, cpu.mask));
    test::require_cuda_close(gpu.y, cpu.y, kTight, "dropout with a device offset");
    ops::DropoutParams summed = params;
    summed.offset = params.offset + static_cast<uint64_t>(step_offset);
    REQUIRE(test::bitwise_equal(ops::dropout_forward(summed, x).mask, cpu.mask));
    require_guards_intact();
  }
  // The offset must live where x does.
  ops::DropoutParams mixed = params;
  mixed.device_offset = Tensor::zeros({1}, DType::i64);
  try {
    ops::dropout_forward(mixed, to_device(x));
    FAIL("a CPU device_offset with a device x did not throw");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("dropout_forward") != std::string::npos);
  }
}

TEST_CASE("ops the CUDA backend lacks are an error naming op, shape and device") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = to_device(test::random_tensor({1, 5, 5, 3}, 1));
  const Tensor w = to_device(test::random_tensor({4, 3, 3, 3}, 2));
  try {
    ops::conv2d_backward_data(ops::Conv2dParams{}, x, w, Shape{1, 7, 7, 3});
    FAIL("conv2d_backward_data on the CUDA device did not throw");
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("conv2d_backward_data") != std::string::npos);
    CHECK(m.find("[1,5,5,3]") != std::string::npos);
    CHECK(m.find("cuda:0") != std::string::npos);
  }
}

TEST_CASE("cast f32 <-> bf16 gives the CPU's bits, specials and views included") {
  AE_GPU_TEST_PRELUDE();
  // Every bf16 bit pattern, widened and rounded back, on both devices.
  Tensor all = Tensor::empty({65536}, DType::bf16);
  for (uint32_t i = 0; i < 65536; ++i) all.data<BFloat16>()[i].bits = static_cast<uint16_t>(i);
  const Tensor wide_cpu = ops::cast(all, DType::f32);
  const Tensor wide_dev = ops::cast(to_device(all), DType::f32);
  CHECK(wide_dev.device().is_cuda());
  CHECK(test::bitwise_equal(wide_dev, wide_cpu));
  CHECK(test::bitwise_equal(ops::cast(wide_dev, DType::bf16), ops::cast(wide_cpu, DType::bf16)));
  // Random floats nudged onto ties and specials, at awkward sizes, and a view at an odd offset.
  uint64_t seed = 70;
  for (const Shape& s : kShapes) {
    Tensor x = test::random_tensor(s, seed++, -3.0f, 3.0f);
    float* p = x.f32();
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(), -0.0f, 3.4028235e38f,
                              std::numeric_limits<float>::infinity(), 1.00390625f /* a tie */, 1e-40f};
    for (int64_t i = 0; i < x.numel(); i += 3) p[i] = specials[(i / 3) % 6];
    const std::string where = "cast of shape " + shape_str(s);
    INFO(where);
    const Tensor b_cpu = ops::cast(x, DType::bf16);
    const Tensor b_dev = ops::cast(to_device(x), DType::bf16);
    CHECK(test::bitwise_equal(b_dev, b_cpu));
    CHECK(test::bitwise_equal(ops::cast(b_dev, DType::f32), ops::cast(b_cpu, DType::f32)));
    require_guards_intact();
  }
  const Tensor x = test::random_tensor({5, 7}, 90);
  const Tensor view = to_device(x).rows(1, 4);  // element offset 7
  CHECK(test::bitwise_equal(ops::cast(view, DType::bf16), ops::cast(x.rows(1, 4), DType::bf16)));
  const Tensor b_view = ops::cast(to_device(x), DType::bf16).rows(3, 5);  // 2-byte aligned start
  CHECK(test::bitwise_equal(ops::cast(b_view, DType::f32), ops::cast(ops::cast(x, DType::bf16).rows(3, 5), DType::f32)));
  require_guards_intact();
}
