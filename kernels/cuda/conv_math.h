#pragma once
// Which arithmetic the CUDA convolution kernels (forward, backward-data, backward-weight) use.
// A process-wide setting, chosen once per run:
//   f32   CUDA-core float32 FMAs (the default, and the reference the others are tested against)
//   tf32  tensor cores, mma.m16n8k8 with operands rounded to TF32 (cvt.rna, 10 mantissa bits),
//         float32 accumulation
//   bf16  tensor cores, mma.m16n8k16 with operands rounded to bfloat16 (round to nearest even,
//         7 mantissa bits), float32 accumulation
// Activations, weights and gradients stay float32 tensors in every mode: only the GEMM operands
// are rounded, as they are staged into shared memory.
//
// The initial value comes from the environment variable AE_CONV_MATH (f32, tf32 or bf16; unset
// means f32), read on first use; set_conv_math overrides it (a CLI flag calls that). An
// unrecognised AE_CONV_MATH is an ae::Error at the first convolution, not a silent default.
#include <string_view>

namespace ae::cuda {

enum class ConvMath { f32, tf32, bf16 };

ConvMath conv_math();
void set_conv_math(ConvMath math);

// "f32" / "tf32" / "bf16" -> ConvMath; anything else throws ae::Error naming `where` (e.g.
// "AE_CONV_MATH" or "--conv-math") and the accepted values.
ConvMath parse_conv_math(std::string_view text, std::string_view where);
// What AE_CONV_MATH asks for now (f32 when unset or empty); throws like parse_conv_math.
ConvMath conv_math_from_environment();
const char* conv_math_name(ConvMath math);

// Sets the mode for the lifetime of the object and restores the previous one (tests).
class ScopedConvMath {
 public:
  explicit ScopedConvMath(ConvMath math) : previous_(conv_math()) { set_conv_math(math); }
  ~ScopedConvMath() { set_conv_math(previous_); }
  ScopedConvMath(const ScopedConvMath&) = delete;
  ScopedConvMath& operator=(const ScopedConvMath&) = delete;

 private:
  ConvMath previous_;
};

}  // namespace ae::cuda
