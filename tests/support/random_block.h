#pragma once
// A BasicBlock with random weights and running statistics (adapters clearly non-zero, so a
// missing or wrong adapter path shows), for tests of the block's fused and folded paths.
#include <cmath>
#include <cstdint>

#include "model/basic_block.h"
#include "tests/support/check.h"

namespace ae::test {

inline void randomise(model::BasicBlock& b, uint64_t seed) {
  for (model::Conv2d* conv : {&b.conv1, &b.conv2, &b.adapter1, &b.adapter2, &b.down_conv}) {
    if (!conv->weight.value.defined()) continue;
    const Shape s = conv->weight.value.shape();
    const float bound = 1.5f / std::sqrt(static_cast<float>(s[1] * s[2] * s[3]));
    conv->weight.value = random_tensor(s, seed++, -bound, bound);
  }
  for (model::BatchNorm* bn : {&b.bn1, &b.bn2, &b.down_bn}) {
    if (!bn->weight.value.defined()) continue;
    const int64_t c = bn->weight.value.numel();
    bn->weight.value = random_tensor({c}, seed++, 0.5f, 1.5f);
    bn->bias.value = random_tensor({c}, seed++, -0.5f, 0.5f);
    bn->running_mean = random_tensor({c}, seed++, -0.2f, 0.2f);
    bn->running_var = random_tensor({c}, seed++, 0.2f, 2.0f);
  }
}

}  // namespace ae::test
