#pragma once
// One CPU convolution algorithm and vector ISA for one scope (kernels/cpu/winograd.h: ConvAlgo,
// kernels/cpu/cpu_isa.h), restored even when a check throws; and the vector ISAs the direct
// forward has on this machine. For the tests that pin which path a convolution takes.
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/winograd.h"

namespace ae::test {

class ScopedConvPath {
 public:
  explicit ScopedConvPath(cpu::CpuIsa isa, cpu::ConvAlgo algo = cpu::ConvAlgo::direct)
      : algo_(cpu::conv_algo()), isa_(cpu::cpu_isa()) {
    cpu::set_conv_algo(algo);
    cpu::set_cpu_isa(isa);
  }
  ~ScopedConvPath() {
    cpu::set_conv_algo(algo_);
    cpu::set_cpu_isa(isa_);
  }
  ScopedConvPath(const ScopedConvPath&) = delete;
  ScopedConvPath& operator=(const ScopedConvPath&) = delete;

 private:
  cpu::ConvAlgo algo_;
  cpu::CpuIsa isa_;
};

// AVX2 and AVX-512, those this machine has (the direct forward has no plain variant).
inline std::vector<cpu::CpuIsa> direct_isas() {
  std::vector<cpu::CpuIsa> out;
  for (cpu::CpuIsa isa : {cpu::CpuIsa::avx2, cpu::CpuIsa::avx512})
    if (cpu::cpu_isa_available(isa)) out.push_back(isa);
  return out;
}

}  // namespace ae::test
