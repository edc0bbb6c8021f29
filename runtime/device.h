#pragma once
// Where a tensor's bytes live. The CPU is always there; CUDA devices exist only when the
// CUDA backend is built and a GPU (or the emulated device) is usable.
#include <string>

namespace ae {

enum class DeviceKind { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Parses "cpu", "cuda", "cuda:N". Throws ae::Error on anything else.
Device parse_device(const std::string& text);

}  // namespace ae
