#include "kernels/cpu/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace ae::cpu {
namespace {
std::atomic<int> g_isa{-1};  // -1: not chosen yet
}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::plain: return "plain";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
  }
  return "?";
}

CpuIsa parse_cpu_isa(const char* text, const char* where) {
  for (CpuIsa isa : {CpuIsa::plain, CpuIsa::avx2, CpuIsa::avx512})
    if (std::strcmp(text, cpu_isa_name(isa)) == 0) return isa;
  AE_FAIL(where << ": unknown instruction set '" << text << "' (expected plain, avx2 or avx512)");
}

CpuIsa cpu_isa_supported() {
  static const CpuIsa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma"))
      return CpuIsa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::avx2;
    return CpuIsa::plain;
  }();
  return best;
}

bool cpu_isa_available(CpuIsa isa) { return static_cast<int>(isa) <= static_cast<int>(cpu_isa_supported()); }

void set_cpu_isa(CpuIsa isa) {
  AE_CHECK(cpu_isa_available(isa), "CPU instruction set " << cpu_isa_name(isa) << " requested, but this machine supports "
                                                          << cpu_isa_name(cpu_isa_supported()) << " at most");
  g_isa.store(static_cast<int>(isa), std::memory_order_release);
}

CpuIsa cpu_isa() {
  const int v = g_isa.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<CpuIsa>(v);
  CpuIsa chosen = cpu_isa_supported();
  if (const char* env = std::getenv("AE_CPU_ISA"); env != nullptr && *env != '\0') {
    chosen = parse_cpu_isa(env, "AE_CPU_ISA");  // a bad value throws every time: nothing is stored
    AE_CHECK(cpu_isa_available(chosen), "AE_CPU_ISA=" << env << ": this machine supports "
                                                      << cpu_isa_name(cpu_isa_supported()) << " at most");
  }
  int expected = -1;
  if (!g_isa.compare_exchange_strong(expected, static_cast<int>(chosen), std::memory_order_acq_rel))
    return static_cast<CpuIsa>(expected);  // a set_cpu_isa that raced with this first use wins
  return chosen;
}

}  // namespace ae::cpu
