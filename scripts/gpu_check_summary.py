#!/usr/bin/env python3
"""The one summary table of scripts/gpu-check.sh, built from the logs its steps wrote.

  scripts/gpu_check_summary.py LOGDIR

Reads, when present (a missing log is reported, never guessed):
  steps.txt             one row per step: name|status|seconds|note (written by gpu-check.sh)
  ctest-gpu.log         ctest -L gpu output: pass/fail/skip counts and the names of failures
  cudnn-oracle.log      gpu_real_test_cudnn_oracle output: per-comparison "% of tolerance" lines
  bench_cuda_conv.log   "RESULT conv ..." lines: per-layer TFLOP/s of ours and cuDNN and ratios
  compare-cuda.log      bench/compare.sh: train-step / inference images/s, aesthete and PyTorch
Prints the table and exits 0 when every step passed and every expected number was found, else 1.
Standard library only (it runs on the GPU machine's python3 and on CI's).
"""
import os
import re
import sys

CTEST_LINE = re.compile(r"Test\s+#\d+:\s+(\S+)\s+\.*\s*(\*\*\*)?(Passed|Failed|Skipped|Timeout|Exception|Not Run)")
ORACLE_LINE = re.compile(r"^\s+(\S+ .*?)\s+max\|diff\| (\S+)\s+nmse (\S+)\s+(\S+)% of elementwise tol,\s+(\S+)% of nmse tol\s+(ok|FAIL)")
IMAGES = re.compile(r"^(aesthete|pytorch)\s+(train-step|inference)\s.*?\s([0-9.]+) images/s")
KV = re.compile(r"(\w+)=(\S+)")


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


def parse_bench(text):
    """(entries: {layer: {pass: {...}}} in order, layer order, step totals or None)."""
    layers, order, step = {}, [], None
    for line in (text or "").splitlines():
        if line.startswith("RESULT conv "):
            kv = dict(KV.findall(line))
            if kv.get("layer") not in layers:
                layers[kv["layer"]] = {}
                order.append(kv["layer"])
            layers[kv["layer"]][kv["pass"]] = kv
        elif line.startswith("RESULT conv-step "):
            step = dict(KV.findall(line))
    return layers, order, step


def parse_compare(text):
    """{('aesthete'|'pytorch', 'train-step'|'inference'): images/s}."""
    out = {}
    for line in (text or "").splitlines():
        m = IMAGES.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


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
    layers, order, step = parse_bench(read(logdir, "bench_cuda_conv.log"))
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
                flag = "!" if float(e.get("nmse", "inf")) > 1e-6 else ""
                row += f" | {float(e['ours_tflops']):>10.2f} {float(e['cudnn_tflops']):>7.2f} {float(e['ratio']):>5.2f}{flag or ' '}"
                if flag:
                    ok = False
            lines.append(row)
        if step:
            lines.append(f"all convolutions of one training step: ours {float(step['ours_ms']):.2f} ms, cuDNN "
                         f"{float(step['cudnn_ms']):.2f} ms, ours/cuDNN {float(step['ratio']):.2f}")
        if any(float(e.get("nmse", "inf")) > 1e-6 for l in layers.values() for e in l.values()):
            lines.append("  ! = our result disagrees with cuDNN's (nmse > 1e-6): see bench_cuda_conv.log")

    lines.append("")
    cmp_text = read(logdir, "compare-cuda.log")
    ims = parse_compare(cmp_text)
    for kind in ("train-step", "inference"):
        a, b = ims.get(("aesthete", kind)), ims.get(("pytorch", kind))
        if a is None or b is None:
            missing = " and ".join(n for n, v in (("aesthete", a), ("pytorch", b)) if v is None)
            lines.append(f"{kind:<10} images/s (cuda, batch 128, f32): missing {missing}" +
                         ("" if cmp_text else " (no compare-cuda.log)"))
            ok = False
        else:
            lines.append(f"{kind:<10} images/s (cuda, batch 128, f32): aesthete {a:.1f}, PyTorch {b:.1f}, "
                         f"aesthete/PyTorch {a / b:.2f}")
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
