#include "kernels/batchnorm_sync.h"

namespace ae::ops {

namespace {
const ChannelSumReducer* g_reducer = nullptr;
}

const ChannelSumReducer* batchnorm_sync_reducer() { return g_reducer; }

ScopedBatchNormSync::ScopedBatchNormSync(ChannelSumReducer reducer)
    : reducer_(std::move(reducer)), previous_(g_reducer) {
  g_reducer = &reducer_;
}

ScopedBatchNormSync::~ScopedBatchNormSync() { g_reducer = previous_; }

}  // namespace ae::ops
