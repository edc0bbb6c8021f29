#pragma once
// The vector instruction set the CPU backend's hand-vectorised kernels run with, chosen at run time
// (the default build targets plain x86-64, so one binary runs on any x86-64 machine; no
// -march=native). Kernels that have ISA variants (kernels/cpu/winograd.cpp) compile their body once
// per entry of CpuIsa with `#pragma GCC target` and call the variant cpu_isa() names.
//
// cpu_isa() is the best the machine supports, lowered by AE_CPU_ISA=plain|avx2|avx512 (read on first
// use) or by set_cpu_isa() (tests and benchmarks comparing the paths). Asking for an instruction set
// the machine lacks is an error, never a silent downgrade.
// A region of a source file compiled for one instruction set, for the ISA variants of a kernel:
//   AE_ISA_AVX2_BEGIN
//   namespace isa_avx2 { ... }
//   AE_ISA_END
// GCC: a target region; clang (the sanitizer and fuzzer builds): the same target as an attribute
// pushed onto every function of the region.
#if defined(__clang__)
#define AE_ISA_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
// (_Pragma takes one string literal: no line break inside it.)
#define AE_ISA_AVX512_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512vl,avx512dq,avx512bw,avx2,fma\"))), apply_to = function)")
#define AE_ISA_END _Pragma("clang attribute pop")
#else
#define AE_ISA_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define AE_ISA_AVX512_BEGIN \
  _Pragma("GCC push_options")   \
      _Pragma("GCC target(\"avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512\")")
#define AE_ISA_END _Pragma("GCC pop_options")
#endif

namespace ae::cpu {

enum class CpuIsa {
  plain,   // x86-64 baseline (SSE2): what the compiler makes of the portable C++
  avx2,    // AVX2 + FMA (256-bit)
  avx512,  // AVX-512 F/VL/DQ/BW + FMA (512-bit)
};

const char* cpu_isa_name(CpuIsa isa);
CpuIsa parse_cpu_isa(const char* text, const char* where);  // "plain", "avx2" or "avx512"
CpuIsa cpu_isa_supported();                                   // the best this machine runs
bool cpu_isa_available(CpuIsa isa);                           // isa <= cpu_isa_supported()
CpuIsa cpu_isa();                                             // the one kernels use now
void set_cpu_isa(CpuIsa isa);                                 // error when not available

}  // namespace ae::cpu
