#!/usr/bin/env python3
"""Unit test of scripts/ptxas_table.py on captured nvcc 13 / ptxas -v output (no nvcc needed):
parsing, block sizes from .maxntid and launch-site tables, and occupancy against hand-computed
values of the CUDA occupancy calculator for sm_90. Run by ctest (unit/ptxas_table)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptxas_table as pt  # noqa: E402

# Captured from `nvcc -arch=sm_90 -Xptxas -v -cubin` (kernels/cuda/pool.cu and a launch-bounds
# sample); the third entry's spill figures and the non-entry device function were edited in to
# cover those lines.
PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN2ae4cuda39_GLOBAL__N__81fd1a72_7_pool_cu_791d87ea32adaptive_avgpool_backward_kernelENS1_10PlaneShapeEPKfPf' for 'sm_90'
ptxas info    : Function properties for _ZN2ae4cuda39_GLOBAL__N__81fd1a72_7_pool_cu_791d87ea32adaptive_avgpool_backward_kernelENS1_10PlaneShapeEPKfPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 92 registers, used 0 barriers
ptxas info    : Compile time = 1461.701 ms
ptxas info    : Compiling entry function '_Z1kILi128EEvPf' for 'sm_90'
ptxas info    : Function properties for _Z1kILi128EEvPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 512 bytes smem
ptxas info    : Function properties for _Z6helperPf
    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z5spillyPf' for 'sm_90'
ptxas info    : Function properties for _Z5spillyPf
    40 bytes stack frame, 24 bytes spill stores, 32 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 33792 bytes smem, 380 bytes cmem[0]
ptxas info    : Compile time = 63.484 ms
"""

PTX = """\
.visible .entry _Z1kILi128EEvPf(
	.param .u64 _Z1kILi128EEvPf_param_0
)
.maxntid 128, 1, 1
.minnctapersm 2
{
	.reg .f32 	%f<3>;
}
.visible .entry _Z5spillyPf(
	.param .u64 _Z5spillyPf_param_0
)
{
}
"""


class Parse(unittest.TestCase):
    def test_entries_and_their_resources(self):
        ks = pt.parse_ptxas(PTXAS)
        self.assertEqual([k["mangled"] for k in ks],
                         ["_ZN2ae4cuda39_GLOBAL__N__81fd1a72_7_pool_cu_791d87ea32adaptive_avgpool_backward_kernelENS1_"
                          "10PlaneShapeEPKfPf", "_Z1kILi128EEvPf", "_Z5spillyPf"])
        pool, k128, spilly = ks
        self.assertEqual((pool["regs"], pool["smem"], pool["stack"], pool["spill_stores"]), (92, 0, 0, 0))
        self.assertEqual((k128["regs"], k128["smem"], k128["barriers"]), (10, 512, 1))
        self.assertEqual((spilly["regs"], spilly["smem"], spilly["stack"], spilly["spill_stores"], spilly["spill_loads"]),
                         (255, 33792, 40, 24, 32))

    def test_launch_bounds_from_ptx(self):
        self.assertEqual(pt.parse_maxntid(PTX), {"_Z1kILi128EEvPf": 128})

    def test_block_size_sources(self):
        bounds = {"_Z1kILi128EEvPf": 128}
        self.assertEqual(pt.block_size("void k<128>(float*)", "_Z1kILi128EEvPf", bounds, "x.cu", ""),
                         (128, "__launch_bounds__"))
        self.assertEqual(pt.block_size("ae::cuda::(anonymous namespace)::backward_totals_kernel(double const*)", "m",
                                       bounds, "photo_edit.cu", "constexpr int kThreads = 256;")[0], 32)
        self.assertEqual(pt.block_size("relu_kernel(float*)", "m", bounds, "activation.cu",
                                       "constexpr int kThreads = 128;"), (128, "activation.cu: kThreads"))
        self.assertEqual(pt.block_size("f(float*)", "m", bounds, "y.cu", "")[0], 256)

    def test_short_names(self):
        self.assertEqual(pt.short_name("ae::cuda::(anonymous namespace)::relu_kernel(float const*, float*, long)"),
                         "relu_kernel")
        self.assertEqual(pt.short_name("void ae::cuda::gemm::tiled_gemm_kernel<A, B>(ae::cuda::gemm::GemmShape, A, B)"),
                         "gemm::tiled_gemm_kernel<A, B>")


class Occupancy(unittest.TestCase):
    # Hand-computed with the occupancy calculator's rules: registers per warp = regs*32 rounded up
    # to 256; each of 4 sub-partitions holds 16384 registers; shared memory per block = static +
    # 1024 reserved rounded up to 128, out of 233472; 64 warps, 32 blocks per SM.
    def check(self, regs, smem, block, blocks, percent, limiter):
        occ = pt.occupancy(regs, smem, block)
        self.assertEqual((occ["blocks"], occ["percent"], occ["limiter"]), (blocks, percent, limiter))

    def test_register_bound(self):
        # 92 regs: 2944 -> 3072 per warp; 16384 // 3072 = 5 warps x 4 = 20 warps; 20 // 8 = 2 blocks.
        self.check(92, 0, 256, 2, 25.0, "registers")

    def test_sub_partitions_round_down(self):
        # 40 regs: 1280 per warp; 16384 // 1280 = 12 x 4 = 48 warps (not 65536 // 1280 = 51); 6 blocks.
        self.check(40, 0, 256, 6, 75.0, "registers")

    def test_shared_memory_bound(self):
        # 32 regs allow 16 blocks of 4 warps; 49152 + 1024 = 50176 per block; 233472 // 50176 = 4.
        self.check(32, 49152, 128, 4, 25.0, "shared memory")

    def test_full_occupancy_warps_bound(self):
        # 8 regs, 256 threads: registers allow 64 warps, 64 // 8 = 8 blocks = 64 warps.
        self.check(8, 512, 256, 8, 100.0, "warps")

    def test_block_count_bound(self):
        # One-warp blocks with few registers: 32 blocks per SM at most = 32 warps.
        self.check(16, 0, 32, 32, 50.0, "blocks/SM")

    def test_large_block(self):
        # 64 regs x 1024 threads: 2048 per warp, 8 warps per sub-partition = 32 warps = 1 block.
        self.check(64, 0, 1024, 1, 50.0, "registers")

    def test_does_not_fit(self):
        # 255 regs x 1024 threads: 8192 per warp x 32 warps > 65536 registers per block.
        # (The 256-thread "spilly" row of test_rows_and_markdown fits once: 2 warps x 4 = 8 warps.)
        occ = pt.occupancy(255, 0, 1024)
        self.assertEqual(occ["blocks"], 0)
        self.assertEqual(occ["limiter"], "registers (does not fit)")
        self.assertEqual(pt.occupancy(32, 228 * 1024, 128)["limiter"], "shared memory (does not fit)")

    def test_rows_and_markdown(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".cu", delete=False) as f:
            f.write("constexpr int kThreads = 256;\n")
            path = f.name
        try:
            rows = pt.rows_for(path, PTXAS, PTX)
        finally:
            os.unlink(path)
        self.assertEqual([(r["block"], r["blocks"], r["percent"]) for r in rows],
                         [(256, 2, 25.0), (128, 16, 100.0), (256, 1, 12.5)])
        table = pt.markdown(rows)
        self.assertIn("| `adaptive_avgpool_backward_kernel` | 92 | 0 | 0/0 | 0 | 256 |", table)
        self.assertIn("| 24/32 | 40 |", table)


if __name__ == "__main__":
    unittest.main()
