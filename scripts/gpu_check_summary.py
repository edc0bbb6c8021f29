#!/usr/bin/env python3
"""The one summary table of scripts/gpu-check.sh, built from the logs its steps wrote.

  scripts/gpu_check_summary.py LOGDIR

Reads, when present (a missing log is reported, never guessed):
  steps.txt             one row per step: name|status|seconds|note (written by gpu-check.sh)
  ctest-gpu.log         ctest -L gpu output: pass/fail/skip counts and the names of failures
  cudnn-oracle.log      gpu_real_tests (test_cudnn_oracle.cpp) output: per-comparison "% of tolerance" lines
  bench_cuda_conv.log   "RESULT conv ..." lines: per-layer TFLOP/s of ours and cuDNN and ratios (f32)
  bench_cuda_conv_bf16.log   the same with --math bf16: per-layer ratios against issue 15's target
  bench_cuda_conv_tf32.log   the same with --math tf32; optional (gpu-check.sh runs it only when time
                        is left), shown when present
  compare-cuda.log      bench/compare.sh: train-step / inference images/s, aesthete and PyTorch (and
                        aesthete's train-step-eager: the step without CUDA graphs, when it used them)
  compare-cuda-bf16.log the same with --precision bf16 (optional: shown when present; issue 15's
                        training-step target is >= 1.3x PyTorch eager channels_last in BF16)
  enhance-graph.log     aesthete bench --what enhance: the batch-1 input-gradient pass of enhancement
                        and saliency, eager and as CUDA graph replays (optional: shown when present)
Prints the table and exits 0 when every step passed and every expected number was found, else 1.
Standard library only (it runs on the GPU machine's python3 and on CI's).
"""
import os
import re
import sys

CTEST_LINE = re.compile(r"Test\s+#\d+:\s+(\S+)\s+\.*\s*(\*\*\*)?(Passed|Failed|Skipped|Timeout|Exception|Not Run)")
ORACLE_LINE = re.compile(r"^\s+(\S+ .*?)\s+max\|diff\| (\S+)\s+nmse (\S+)\s+(\S+)% of elementwise tol,\s+(\S+)% of nmse tol\s+(ok|FAIL)")
IMAGES = re.compile(r"^(aesthete|pytorch)\s+(train-step|train-step-eager|inference)\s.*?\s([0-9.]+) images/s")
KV = re.compile(r"(\w+)=(\S+)")
ENHANCE = re.compile(r"^(enhance-step|enhance-step-graph)\s+(.*?)\s+[0-9.]+ images/s\s+\(([0-9.]+) ms/step")
# The nmse above which bench_cuda_conv calls a result wrong, when its RESULT line has no nmse_tol
# field (lines from before --math: f32 only).
DEFAULT_NMSE_TOL = 1e-6
# Issue 15: "conv >= 70 % of cuDNN's throughput at batch 128 on every ResNet-18 layer in BF16".
TARGET_RATIO = 0.70
PASSES = ("fwd", "dgrad", "wgrad")


def read(logdir, name):
    path = os.path.join(logdir, name)
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        return f.read()


def parse_steps(text):
    rows = []
    for line in (text or "").splitlines():
        if line.strip():
            parts = (line.split("|", 3) + ["", "", ""])[:4]
            rows.append(parts)
    return rows


def parse_ctest(text):
    """{'passed': n, 'failed': n, 'skipped': n, 'failures': [names], 'skips': [names]}."""
    r = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skips": []}
    for line in (text or "").splitlines():
        m = CTEST_LINE.search(line)
        if not m:
            continue
        name, status = m.group(1), m.group(3)
        if status == "Passed":
            r["passed"] += 1
        elif status == "Skipped":
            r["skipped"] += 1
            r["skips"].append(name)
        else:
            r["failed"] += 1
            r["failures"].append(f"{name} ({status})")
    return r


def parse_oracle(text):
    """List of (what, max_diff, nmse, pct_elementwise, pct_nmse, ok)."""
    out = []
    for line in (text or "").splitlines():
        m = ORACLE_LINE.match(line)
        if m:
            out.append((m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5)),
                        m.group(6) == "ok"))
    return out


def parse_bench(text, math=None):
    """(entries: {layer: {pass: {...}}} in order, layer order, step totals or None).

    math: keep only lines of that precision (a line without math= is f32, as bench_cuda_conv printed
    before --math existed); None keeps every line."""
    layers, order, step = {}, [], None
    for line in (text or "").splitlines():
        if not line.startswith("RESULT conv"):
            continue
        kv = dict(KV.findall(line))
        if math is not None and kv.get("math", "f32") != math:
            continue
        if line.startswith("RESULT conv "):
            if kv.get("layer") not in layers:
                layers[kv["layer"]] = {}
                order.append(kv["layer"])
            layers[kv["layer"]][kv["pass"]] = kv
        elif line.startswith("RESULT conv-step "):
            step = kv
    return layers, order, step


def is_mismatch(e):
    """Whether a RESULT conv entry's result disagrees with cuDNN's beyond its precision's tolerance."""
    try:
        return not float(e.get("nmse", "inf")) <= float(e.get("nmse_tol", DEFAULT_NMSE_TOL))
    except ValueError:
        return True


def summarise_reduced_precision(lines, logdir, math, required):
    """The ratio table of bench_cuda_conv --math MATH (bench_cuda_conv_MATH.log). Returns ok."""
    name = f"bench_cuda_conv_{math}.log"
    text = read(logdir, name)
    if text is None and not required:
        lines.append(f"conv vs cuDNN in {math}: not run (no {name})")
        return True
    layers, order, step = parse_bench(text, math)
    if not order:
        lines.append(f"conv vs cuDNN in {math}: no RESULT lines" + (f" in {name}" if text is not None else f" (no {name})"))
        return False
    ok = True
    peer = {"bf16": "cuDNN reads and writes BF16 tensors (half our bytes), f32 accumulation, CUDNN_TENSOR_OP_MATH",
            "tf32": "cuDNN reads and writes f32 tensors, CUDNN_DEFAULT_MATH (TF32 allowed)"}.get(math, "cuDNN")
    lines.append(f"conv vs cuDNN in {math}, ratio = ours/cuDNN throughput (batch 128 at 224x224, cuDNN's fastest "
                 f"algorithm; < = below {TARGET_RATIO:.2f}, issue 15's target in BF16)")
    lines.append(f"  ours: reads and writes f32 tensors, {math} operands on tensor cores, f32 accumulation; {peer}")
    lines.append(f"{'layer':<16} |" + "".join(f" {p:>5} " for p in PASSES).rstrip())
    below, worst = [], None
    for layer in order:
        row = f"{layer:<16} |"
        for p in PASSES:
            e = layers[layer].get(p)
            if e is None:
                row += f" {'-':>5} "
                ok = False
                continue
            ratio = float(e["ratio"])
            mark = "!" if is_mismatch(e) else ("<" if ratio < TARGET_RATIO else " ")
            row += f" {ratio:>5.2f}{mark}"
            if ratio < TARGET_RATIO:
                below.append(f"{layer} {p}")
            if worst is None or ratio < worst[0]:
                worst = (ratio, f"{layer} {p}")
            if is_mismatch(e):
                ok = False
        lines.append(row.rstrip())
    entries = sum(len(l) for l in layers.values())
    if step:
        lines.append(f"all convolutions of one training step ({math}): ours {float(step['ours_ms']):.2f} ms, cuDNN "
                     f"{float(step['cudnn_ms']):.2f} ms, ours/cuDNN {float(step['ratio']):.2f}")
    else:
        lines.append(f"all convolutions of one training step ({math}): no RESULT conv-step line")
        ok = False
    if worst is not None:
        label = "issue 15 target" if math == "bf16" else "issue 15's BF16 target, for comparison"
        lines.append(f"{label} (>= {TARGET_RATIO:.2f} of cuDNN on every layer and pass): "
                     f"{entries - len(below)} of {entries} entries meet it; worst {worst[0]:.2f} ({worst[1]})")
    if any(is_mismatch(e) for l in layers.values() for e in l.values()):
        lines.append(f"  ! = our result disagrees with cuDNN's beyond the {math} tolerance: see {name}")
    return ok


# Issue 15: a BF16 training step >= 1.3x PyTorch eager channels_last at the same precision.
TRAIN_STEP_TARGET = 1.3


def parse_compare(text):
    """{('aesthete'|'pytorch', 'train-step'|'train-step-eager'|'inference'): images/s}."""
    out = {}
    for line in (text or "").splitlines():
        m = IMAGES.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def summarise_compare(lines, text, precision, name):
    """The training-step and inference rows of one bench/compare.sh log; False when a number is missing."""
    ok = True
    ims = parse_compare(text)
    for kind in ("train-step", "inference"):
        a, b = ims.get(("aesthete", kind)), ims.get(("pytorch", kind))
        where = f"{kind:<10} images/s (cuda, batch 128, {precision})"
        if a is None or b is None:
            missing = " and ".join(n for n, v in (("aesthete", a), ("pytorch", b)) if v is None)
            lines.append(f"{where}: missing {missing}" + ("" if text else f" (no {name})"))
            ok = False
            continue
        line = f"{where}: aesthete {a:.1f}, PyTorch {b:.1f}, aesthete/PyTorch {a / b:.2f}"
        if kind == "train-step" and precision == "bf16":
            line += f" (issue 15 target >= {TRAIN_STEP_TARGET:.2f}: {'met' if a / b >= TRAIN_STEP_TARGET else 'not met'})"
        lines.append(line)
        eager = ims.get(("aesthete", "train-step-eager"))
        if kind == "train-step" and eager is not None:
            lines.append(f"{'':<10} aesthete's step is CUDA graph replays; the same step without graphs "
                         f"{eager:.1f} images/s: graphs {a / eager:.2f}x eager")
    return ok


def summarise_enhance(lines, text):
    """The enhancement pass eager and as graph replays (enhance-graph.log); False when a number is missing."""
    ms, where = {}, ""
    for line in (text or "").splitlines():
        m = ENHANCE.match(line)
        if m:
            ms[m.group(1)] = float(m.group(3))
            where = where or m.group(2)
    eager, graph = ms.get("enhance-step"), ms.get("enhance-step-graph")
    if eager is None or graph is None:
        missing = " and ".join(n for n, v in (("enhance-step", eager), ("enhance-step-graph", graph)) if v is None)
        lines.append(f"enhance step (input gradient): missing {missing} in enhance-graph.log")
        return False
    lines.append(f"enhance step (input gradient, {where}): eager {eager:.2f} ms, CUDA graph replays {graph:.2f} ms: "
                 f"graphs {eager / graph:.2f}x eager")
    return True


def summarise(logdir):
    """Returns (text, ok)."""
    lines, ok = [], True
    steps = parse_steps(read(logdir, "steps.txt"))
    lines.append(f"gpu-check summary (logs in {logdir})")
    lines.append("")
    lines.append(f"{'STEP':<24} {'STATUS':<9} {'SECONDS':>7}  NOTE")
    for name, status, seconds, note in steps:
        lines.append(f"{name:<24} {status:<9} {seconds:>7}  {note}")
        if status not in ("ok", "info"):
            ok = False
    if not steps:
        lines.append("(no steps.txt: gpu-check.sh did not record its steps)")
        ok = False

    lines.append("")
    ctest_text = read(logdir, "ctest-gpu.log")
    if ctest_text is None:
        lines.append("tests (ctest -L gpu): no log")
        ok = False
    else:
        c = parse_ctest(ctest_text)
        lines.append(f"tests (ctest -L gpu): {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
        for f in c["failures"]:
            lines.append(f"  FAILED  {f}")
        for s in c["skips"]:
            lines.append(f"  skipped {s}")
        if c["failed"] or c["passed"] + c["failed"] + c["skipped"] == 0:
            ok = False

    oracle_text = read(logdir, "cudnn-oracle.log")
    oracle = parse_oracle(oracle_text)
    if not oracle:
        lines.append("cuDNN oracle: no comparisons found" + ("" if oracle_text else " (no log)"))
        ok = False
    else:
        bad = [o for o in oracle if not o[5]]
        worst_e = max(oracle, key=lambda o: o[3])
        worst_n = max(oracle, key=lambda o: o[4])
        lines.append(f"cuDNN oracle (batch 8, f32, TF32 off): {len(oracle)} comparisons, {len(bad)} outside tolerance; "
                     f"worst {worst_e[3]:.1f}% of elementwise tol ({worst_e[0]}), "
                     f"worst {worst_n[4]:.1f}% of nmse tol ({worst_n[0]})")
        for o in bad:
            lines.append(f"  FAIL {o[0]}: max|diff| {o[1]:.3e}, {o[3]:.1f}% / {o[4]:.1f}% of tolerance")
        if bad:
            ok = False

    lines.append("")
    layers, order, step = parse_bench(read(logdir, "bench_cuda_conv.log"), "f32")
    if not order:
        lines.append("conv vs cuDNN: no RESULT lines from bench_cuda_conv")
        ok = False
    else:
        lines.append("conv vs cuDNN, TFLOP/s (batch 128 at 224x224, f32, cuDNN FMA math = TF32 off, cuDNN's fastest "
                     "algorithm); ratio = ours/cuDNN, > 1 is faster than cuDNN")
        head = f"{'layer':<16}"
        for p in ("fwd", "dgrad", "wgrad"):
            head += f" | {p + ' ours':>10} {'cuDNN':>7} {'ratio':>6}"
        lines.append(head)
        for layer in order:
            row = f"{layer:<16}"
            for p in ("fwd", "dgrad", "wgrad"):
                e = layers[layer].get(p)
                if e is None:
                    row += f" | {'-':>10} {'-':>7} {'-':>6}"
                    ok = False
                    continue
                flag = "!" if is_mismatch(e) else ""
                row += f" | {float(e['ours_tflops']):>10.2f} {float(e['cudnn_tflops']):>7.2f} {float(e['ratio']):>5.2f}{flag or ' '}"
                if flag:
                    ok = False
            lines.append(row)
        if step:
            lines.append(f"all convolutions of one training step: ours {float(step['ours_ms']):.2f} ms, cuDNN "
                         f"{float(step['cudnn_ms']):.2f} ms, ours/cuDNN {float(step['ratio']):.2f}")
        if any(is_mismatch(e) for l in layers.values() for e in l.values()):
            lines.append("  ! = our result disagrees with cuDNN's (nmse > 1e-6): see bench_cuda_conv.log")

    lines.append("")
    if not summarise_reduced_precision(lines, logdir, "bf16", required=True):
        ok = False
    tf32_lines = []
    if not summarise_reduced_precision(tf32_lines, logdir, "tf32", required=False):
        ok = False
    if tf32_lines:
        lines.append("")
        lines.extend(tf32_lines)

    lines.append("")
    if not summarise_compare(lines, read(logdir, "compare-cuda.log"), "f32", "compare-cuda.log"):
        ok = False
    bf16_text = read(logdir, "compare-cuda-bf16.log")
    if bf16_text is not None and not summarise_compare(lines, bf16_text, "bf16", "compare-cuda-bf16.log"):
        ok = False
    enhance_text = read(logdir, "enhance-graph.log")
    if enhance_text is not None and not summarise_enhance(lines, enhance_text):
        ok = False
    lines.append("")
    lines.append(f"result: {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines), ok


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print(f"usage: {argv[0]} LOGDIR (a folder written by scripts/gpu-check.sh)", file=sys.stderr)
        return 2
    text, ok = summarise(argv[1])
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
