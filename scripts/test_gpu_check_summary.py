#!/usr/bin/env python3
"""Tests of scripts/gpu_check_summary.py on fake logs in the exact formats the GPU steps print
(ctest, gpu_real_tests --source-file=*/test_cudnn_oracle.cpp, bench_cuda_conv [--math bf16|tf32], bench/compare.sh), so the
table code is checked on a machine without a GPU.

  python3 scripts/test_gpu_check_summary.py                   # run the tests
  python3 scripts/test_gpu_check_summary.py --write-fixtures DIR
      writes the passing fake logs to DIR (scripts/gpu-check.sh --dry-run builds its table from them)
"""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_check_summary as summary  # noqa: E402

LAYERS = ["conv1", "layer1.3x3", "layer2.0.3x3/2", "layer2.3x3", "layer2.0.down", "layer3.0.3x3/2",
          "layer3.3x3", "layer3.0.down", "layer4.0.3x3/2", "layer4.3x3", "layer4.0.down"]

CTEST_OK = """\
Test project /work/main/build-gpu
    Start  1: gpu-real/test_cuda_batchnorm
 1/3 Test  #1: gpu-real/test_cuda_batchnorm ........   Passed    0.61 sec
    Start 13: gpu-real/test_cudnn_oracle
 2/3 Test #13: gpu-real/test_cudnn_oracle .........   Passed    2.40 sec
    Start 12: gpu-real/test_emulator
 3/3 Test #12: gpu-real/test_emulator ..............***Skipped   0.01 sec

100% tests passed, 0 tests failed out of 3
"""

CTEST_BAD = CTEST_OK.replace(
    " 1/3 Test  #1: gpu-real/test_cuda_batchnorm ........   Passed    0.61 sec",
    " 1/3 Test  #1: gpu-real/test_cuda_batchnorm ........***Failed    0.61 sec")


def oracle_line(what, diff, nmse, pct_e, pct_n, ok=True):
    # printf("  %-44s max|diff| %.3e  nmse %.3e  %6.2f%% of elementwise tol, %6.2f%% of nmse tol  %s\n")
    return (f"  {what:<44} max|diff| {diff:.3e}  nmse {nmse:.3e}  {pct_e:6.2f}% of elementwise tol, "
            f"{pct_n:6.2f}% of nmse tol  {'ok' if ok else 'FAIL'}\n")


ORACLE_OK = ("oracle: cuDNN 9.19.0 (built against 9.19.0, cuDNN's cudart 13000); batch 8, NHWC f32, FMA math (TF32 off)\n"
             + oracle_line("fwd conv1 [IMPLICIT_PRECOMP_GEMM]", 1.2e-5, 3e-15, 2.5, 0.1)
             + oracle_line("wgrad layer4.0 down [ALGO_1]", 3.1e-3, 2e-13, 17.25, 4.2)
             + oracle_line("bn bwd dgamma layer4 bn [8,7,7,512]", 1e-5, 1e-14, 0.5, 1.0))


NMSE_TOL = {"f32": 1e-6, "tf32": 1e-5, "bf16": 1e-4}  # bench_cuda_conv's mismatch_nmse


def bench_log(ratio_of=lambda layer, p: 0.5, nmse_of=lambda layer, p: 1e-12, math="f32", legacy=False):
    # printf("RESULT conv layer=%s pass=%s math=%s gflop=%.3f ours_ms=%.4f cudnn_ms=%.4f ours_tflops=%.3f "
    #        "cudnn_tflops=%.3f ratio=%.4f algo=%s nmse=%.3e nmse_tol=%.0e runs=%d/%d\n")
    # legacy: the format before --math (no math= or nmse_tol= fields), which still parses as f32.
    out = ["bench_cuda_conv: NVIDIA H200 (sm_90, 132 SMs); cuDNN 9.19.0", "  conv1            fwd   ours 1.000 ms"]
    math_kv = "" if legacy else f" math={math}"
    algo = "IMPLICIT_PRECOMP_GEMM" if math == "f32" else "IMPLICIT_PRECOMP_GEMM/tensor_op"
    for layer in LAYERS:
        for p in ("fwd", "dgrad", "wgrad"):
            ratio = ratio_of(layer, p)
            cudnn_ms = 2.0
            ours_ms = cudnn_ms / ratio
            gflop = 29.6
            tol = "" if legacy else f" nmse_tol={NMSE_TOL[math]:.0e}"
            out.append(f"RESULT conv layer={layer} pass={p}{math_kv} gflop={gflop:.3f} ours_ms={ours_ms:.4f} "
                       f"cudnn_ms={cudnn_ms:.4f} ours_tflops={gflop / ours_ms:.3f} cudnn_tflops={gflop / cudnn_ms:.3f} "
                       f"ratio={ratio:.4f} algo={algo} nmse={nmse_of(layer, p):.3e}{tol} runs=150/300")
    step_ratio = 0.5 if math == "f32" else 0.8
    out.append(f"RESULT conv-step batch=128{math_kv} ours_ms={60.0 / step_ratio:.3f} cudnn_ms=60.000 "
               f"ratio={step_ratio:.4f}")
    return "\n".join(out) + "\n"


def bf16_log(**kw):
    kw.setdefault("ratio_of", lambda layer, p: 0.8)
    return bench_log(math="bf16", **kw)


COMPARE_OK = """\
aesthete  train-step  device=cuda:0 batch=128 size=224  800.00 images/s  (8713.2 GFLOP/s at 3x forward)
aesthete  inference   device=cuda:0 batch=128 size=224  3000.00 images/s  (10890.0 GFLOP/s)
pytorch   train-step  device=cuda:0 batch=128 size=224  1000.00 images/s  (10890.0 GFLOP/s at 3x forward)  [pytorch 2.11.0 precision=f32 cudnn.allow_tf32=False matmul.allow_tf32=False cudnn.benchmark=True]
pytorch   inference   device=cuda:0 batch=128 size=224  4000.00 images/s  (14520.0 GFLOP/s)  [pytorch 2.11.0 precision=f32 cudnn.allow_tf32=False matmul.allow_tf32=False cudnn.benchmark=True]
ratio     train-step aesthete/pytorch = 0.80x
ratio     inference  aesthete/pytorch = 0.75x
"""

COMPARE_BF16 = """\
aesthete  train-step  device=cuda:0 batch=128 size=224 precision=bf16  1500.00 images/s  (16337.2 GFLOP/s at 3x forward; CUDA graph replays)
aesthete  train-step-eager device=cuda:0 batch=128 size=224 precision=bf16  1250.00 images/s  (graph replays 1.20x eager)
aesthete  inference   device=cuda:0 batch=128 size=224  5000.00 images/s  (18150.0 GFLOP/s)
pytorch   train-step  device=cuda:0 batch=128 size=224  1000.00 images/s  (10890.0 GFLOP/s at 3x forward)  [pytorch 2.11.0 precision=bf16 cudnn.allow_tf32=False matmul.allow_tf32=False cudnn.benchmark=True]
pytorch   inference   device=cuda:0 batch=128 size=224  6000.00 images/s  (21780.0 GFLOP/s)  [pytorch 2.11.0 precision=bf16 cudnn.allow_tf32=False matmul.allow_tf32=False cudnn.benchmark=True]
ratio     train-step aesthete/pytorch = 1.50x
ratio     inference  aesthete/pytorch = 0.83x
"""

ENHANCE_OK = """\
enhance-step device=cuda:0 batch=1 size=512  125.00 images/s  (8.0 ms/step)
enhance-step-graph device=cuda:0 batch=1 size=512  250.00 images/s  (4.0 ms/step; 2.00x eager)
"""

STEPS_OK = "device|ok|0|GPU 0: NVIDIA H200\nconfigure|ok|10|\nbuild|ok|150|\nctest-gpu|ok|40|\n"


def write_fixtures(logdir, ctest=CTEST_OK, oracle=ORACLE_OK, bench=None, bench_bf16=None, bench_tf32=None,
                   compare=COMPARE_OK, compare_bf16=None, enhance=None, steps=None):
    # bench_bf16: None writes the passing fake log, "" an empty one; bench_tf32 (optional step): None
    # writes no log at all.
    files = {"ctest-gpu.log": ctest, "cudnn-oracle.log": oracle,
             "bench_cuda_conv.log": bench if bench is not None else bench_log(),
             "bench_cuda_conv_bf16.log": bench_bf16 if bench_bf16 is not None else bf16_log(),
             "bench_cuda_conv_tf32.log": bench_tf32, "compare-cuda.log": compare,
             "compare-cuda-bf16.log": compare_bf16, "enhance-graph.log": enhance,
             "steps.txt": steps}
    for name, text in files.items():
        if text is not None:
            with open(os.path.join(logdir, name), "w") as f:
                f.write(text)


class SummaryTest(unittest.TestCase):
    def run_summary(self, **fixtures):
        with tempfile.TemporaryDirectory() as d:
            fixtures.setdefault("steps", STEPS_OK)
            write_fixtures(d, **fixtures)
            return summary.summarise(d)

    def test_all_good_is_pass_with_every_number(self):
        text, ok = self.run_summary()
        self.assertTrue(ok, text)
        self.assertIn("result: PASS", text)
        self.assertIn("2 passed, 0 failed, 1 skipped", text)
        self.assertIn("3 comparisons, 0 outside tolerance", text)
        self.assertIn("worst 17.2% of elementwise tol (wgrad layer4.0 down [ALGO_1])", text)
        for layer in LAYERS:
            self.assertRegex(text, rf"(?m)^{layer.replace('.', '[.]')}\s+\|\s+7\.40\s+14\.80\s+0\.50 ")
        self.assertIn("ours 120.00 ms, cuDNN 60.00 ms, ours/cuDNN 0.50", text)
        self.assertIn("aesthete 800.0, PyTorch 1000.0, aesthete/PyTorch 0.80", text)
        self.assertIn("aesthete 3000.0, PyTorch 4000.0, aesthete/PyTorch 0.75", text)
        self.assertIn("conv vs cuDNN in bf16", text)
        for layer in LAYERS:
            self.assertRegex(text, rf"(?m)^{layer.replace('.', '[.]')}\s+\|\s+0\.80\s+0\.80\s+0\.80$")
        self.assertIn("all convolutions of one training step (bf16): ours 75.00 ms, cuDNN 60.00 ms, ours/cuDNN 0.80",
                      text)
        self.assertIn("33 of 33 entries meet it; worst 0.80", text)
        self.assertIn("conv vs cuDNN in tf32: not run (no bench_cuda_conv_tf32.log)", text)

    def test_lines_without_math_field_are_f32(self):
        text, ok = self.run_summary(bench=bench_log(legacy=True))
        self.assertTrue(ok, text)
        for layer in LAYERS:
            self.assertRegex(text, rf"(?m)^{layer.replace('.', '[.]')}\s+\|\s+7\.40\s+14\.80\s+0\.50 ")

    def test_f32_table_ignores_other_precisions(self):
        text, ok = self.run_summary(bench=bench_log() + bf16_log(ratio_of=lambda layer, p: 3.0))
        self.assertTrue(ok, text)
        self.assertNotIn("3.00", text)
        self.assertIn("ours 120.00 ms, cuDNN 60.00 ms, ours/cuDNN 0.50", text)

    def test_bf16_below_target_is_marked_not_failed(self):
        slow = lambda layer, p: 0.5 if (layer, p) == ("layer4.3x3", "dgrad") else 0.9  # noqa: E731
        text, ok = self.run_summary(bench_bf16=bf16_log(ratio_of=slow))
        self.assertTrue(ok, text)
        self.assertRegex(text, r"(?m)^layer4\.3x3\s+\|\s+0\.90\s+0\.50<\s+0\.90$")
        self.assertIn("32 of 33 entries meet it; worst 0.50 (layer4.3x3 dgrad)", text)

    def test_bf16_tolerance_comes_from_the_line(self):
        # 5e-6 is rounding at bf16 (tolerance 1e-4) but a wrong result at f32 (1e-6).
        text, ok = self.run_summary(bench_bf16=bf16_log(nmse_of=lambda layer, p: 5e-6))
        self.assertTrue(ok, text)
        text, ok = self.run_summary(bench_bf16=bf16_log(nmse_of=lambda layer, p: 1e-2 if p == "wgrad" else 5e-6))
        self.assertFalse(ok)
        self.assertRegex(text, r"(?m)^conv1\s+\|\s+0\.80\s+0\.80\s+0\.80!$")
        self.assertIn("beyond the bf16 tolerance", text)

    def test_missing_bf16_log_fails(self):
        with tempfile.TemporaryDirectory() as d:
            write_fixtures(d, steps=STEPS_OK)
            os.remove(os.path.join(d, "bench_cuda_conv_bf16.log"))
            text, ok = summary.summarise(d)
        self.assertFalse(ok)
        self.assertIn("conv vs cuDNN in bf16: no RESULT lines (no bench_cuda_conv_bf16.log)", text)

    def test_empty_bf16_log_fails(self):
        text, ok = self.run_summary(bench_bf16="bench_cuda_conv: error: cuDNN call failed\n")
        self.assertFalse(ok)
        self.assertIn("conv vs cuDNN in bf16: no RESULT lines in bench_cuda_conv_bf16.log", text)

    def test_tf32_shown_when_present(self):
        text, ok = self.run_summary(bench_tf32=bench_log(math="tf32", ratio_of=lambda layer, p: 0.6))
        self.assertTrue(ok, text)
        self.assertIn("conv vs cuDNN in tf32", text)
        self.assertRegex(text, r"(?m)^layer2\.3x3\s+\|\s+0\.60<\s+0\.60<\s+0\.60<$")
        self.assertIn("all convolutions of one training step (tf32): ours 75.00 ms", text)

    def test_bf16_training_step_shown_against_its_target_when_present(self):
        text, ok = self.run_summary()
        self.assertNotIn("bf16): aesthete", text)  # optional step, no log: nothing shown
        text, ok = self.run_summary(compare_bf16=COMPARE_BF16)
        self.assertTrue(ok, text)
        self.assertIn("train-step images/s (cuda, batch 128, bf16): aesthete 1500.0, PyTorch 1000.0, "
                      "aesthete/PyTorch 1.50 (issue 15 target >= 1.30: met)", text)
        self.assertIn("inference  images/s (cuda, batch 128, bf16): aesthete 5000.0, PyTorch 6000.0, "
                      "aesthete/PyTorch 0.83", text)
        self.assertIn("aesthete's step is CUDA graph replays; the same step without graphs 1250.0 images/s: "
                      "graphs 1.20x eager", text)
        self.assertEqual(text.count("without graphs"), 1)  # the f32 log has no eager line: nothing invented
        slow = COMPARE_BF16.replace("1500.00 images/s", "1200.00 images/s")
        text, ok = self.run_summary(compare_bf16=slow)
        self.assertTrue(ok, text)  # a missed target is reported, not a failed check
        self.assertIn("aesthete/PyTorch 1.20 (issue 15 target >= 1.30: not met)", text)
        text, ok = self.run_summary(compare_bf16=COMPARE_BF16.split("pytorch   train-step")[0])
        self.assertFalse(ok)
        self.assertIn("train-step images/s (cuda, batch 128, bf16): missing pytorch", text)

    def test_enhance_graph_shown_when_present(self):
        text, ok = self.run_summary()
        self.assertNotIn("enhance step", text)  # optional step, no log: nothing shown
        text, ok = self.run_summary(enhance=ENHANCE_OK)
        self.assertTrue(ok, text)
        self.assertIn("enhance step (input gradient, device=cuda:0 batch=1 size=512): eager 8.00 ms, "
                      "CUDA graph replays 4.00 ms: graphs 2.00x eager", text)
        text, ok = self.run_summary(enhance=ENHANCE_OK.splitlines()[0] + "\n")
        self.assertFalse(ok)
        self.assertIn("enhance step (input gradient): missing enhance-step-graph in enhance-graph.log", text)

    def test_ratio_column_is_per_pass(self):
        text, ok = self.run_summary(bench=bench_log(ratio_of=lambda layer, p: {"fwd": 0.25, "dgrad": 0.5, "wgrad": 2.0}[p]))
        self.assertTrue(ok, text)
        self.assertRegex(text, r"(?m)^conv1\s+\|\s+3\.70\s+14\.80\s+0\.25\s+\|\s+7\.40\s+14\.80\s+0\.50\s+\|\s+29\.60\s+14\.80\s+2\.00")

    def test_failed_test_fails_and_is_named(self):
        text, ok = self.run_summary(ctest=CTEST_BAD)
        self.assertFalse(ok)
        self.assertIn("FAILED  gpu-real/test_cuda_batchnorm (Failed)", text)
        self.assertIn("result: FAIL", text)

    def test_oracle_outside_tolerance_fails(self):
        text, ok = self.run_summary(oracle=ORACLE_OK + oracle_line("dgrad layer1 3x3 [ALGO_1]", 1.0, 0.1, 1e6, 1e9, ok=False))
        self.assertFalse(ok)
        self.assertIn("FAIL dgrad layer1 3x3 [ALGO_1]", text)

    def test_wrong_conv_result_is_flagged(self):
        text, ok = self.run_summary(bench=bench_log(nmse_of=lambda layer, p: 1e-2 if (layer, p) == ("layer3.3x3", "wgrad") else 1e-12))
        self.assertFalse(ok)
        self.assertRegex(text, r"(?m)^layer3\.3x3 .*\|\s+7\.40\s+14\.80\s+0\.50!$")
        self.assertIn("disagrees with cuDNN", text)

    def test_missing_logs_fail_and_say_so(self):
        text, ok = self.run_summary(compare=None, bench="", oracle=None)
        self.assertFalse(ok)
        self.assertIn("missing aesthete and pytorch (no compare-cuda.log)", text)
        self.assertIn("no RESULT lines from bench_cuda_conv", text)
        self.assertIn("cuDNN oracle: no comparisons found (no log)", text)

    def test_timed_out_step_fails(self):
        text, ok = self.run_summary(steps=STEPS_OK + "bench_cuda_conv|TIMEOUT|150|after 150s\n")
        self.assertFalse(ok)
        self.assertRegex(text, r"bench_cuda_conv\s+TIMEOUT")

    def test_zero_tests_is_not_a_pass(self):
        text, ok = self.run_summary(ctest="No tests were found!!!\n")
        self.assertFalse(ok)
        self.assertIn("0 passed, 0 failed, 0 skipped", text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixtures":
        os.makedirs(sys.argv[2], exist_ok=True)
        # Not steps.txt: gpu-check.sh --dry-run writes its own. The optional tf32 and bf16-compare
        # logs too, so that the dry run shows every table.
        write_fixtures(sys.argv[2], bench_tf32=bench_log(math="tf32", ratio_of=lambda layer, p: 0.9),
                       compare_bf16=COMPARE_BF16, enhance=ENHANCE_OK)
        sys.exit(0)
    unittest.main()
