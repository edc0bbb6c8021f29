#!/usr/bin/env python3
"""Registers, shared memory, spills and occupancy of every CUDA kernel at sm_90, from ptxas.

Compiles each kernels/cuda/*.cu for sm_90 only (device code; -cubin, no host compile) with the
flags the real build uses (kernels/CMakeLists.txt: -std=c++20 --expt-relaxed-constexpr, the source
root on the include path) plus -Xptxas -v, and prints a markdown table: per kernel the registers,
static shared memory, spill stores/loads, stack frame, the block size it is launched with and the
occupancy that allows on an H100/H200 SM (the CUDA occupancy calculator's rules for sm_90, see
occupancy()). Nothing is timed; no GPU is needed.

Block size: the kernel's __launch_bounds__ when it has one (read from the .maxntid of the PTX),
else BLOCK_SIZES below (read from the launch sites), else the `constexpr int kThreads = N` of the
kernel's source file (the launch sites use dim3(kThreads)), else 256, marked "assumed".
Dynamic shared memory is not in ptxas's output: a kernel that uses it is better than its row.

    /usr/bin/python3 scripts/ptxas_table.py [--nvcc /usr/local/cuda/bin/nvcc] [files...]

Standard library only.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sm_90 (H100 / H200) limits, as the occupancy calculator (cuda_occupancy.h) uses them.
SM90 = {
    "warp": 32,
    "regs_per_sm": 65536,
    "regs_per_block": 65536,
    "reg_alloc_unit": 256,  # registers are allocated per warp in units of 256
    "max_regs_per_thread": 255,
    "sub_partitions": 4,  # the register file is split over 4 schedulers
    "max_threads_per_sm": 2048,
    "max_warps_per_sm": 64,
    "max_blocks_per_sm": 32,
    "smem_per_sm": 228 * 1024,
    "smem_reserved_per_block": 1024,
    "smem_max_per_block": 227 * 1024,
    "smem_alloc_unit": 128,
}

# Kernels launched with another block size than their file's kThreads (read from the launch
# sites); a regex on the demangled name -> (block size, where it comes from).
BLOCK_SIZES = [
    (r"\bcoefficients_kernel\b", 1, "photo_edit.cu: dim3(1)"),
    (r"\bbackward_totals_kernel\b", 32, "photo_edit.cu: dim3(kWarp)"),
    (r"\bchannel_(partials|totals)_kernel\b", 256, "channel_reduce.h: kChannelReduceThreads"),
]


def round_up(x, unit):
    return (x + unit - 1) // unit * unit


def occupancy(regs, static_smem, block, dynamic_smem=0, arch=SM90):
    """Resident blocks and occupancy of one kernel, with the limiting resource.

    Follows cudaOccMaxActiveBlocksPerMultiprocessor: warps per block rounded up; registers per
    warp rounded up to the allocation unit and allotted per sub-partition (each of the 4 holds
    regs_per_sm / 4); shared memory per block = static + dynamic + 1 KiB reserved, rounded up to
    128 bytes, out of 228 KiB per SM; at most 32 blocks, 64 warps, 2048 threads per SM.
    """
    warp = arch["warp"]
    warps_per_block = -(-block // warp)
    limits = {}
    limits["warps"] = arch["max_warps_per_sm"] // warps_per_block
    limits["threads"] = arch["max_threads_per_sm"] // block
    limits["blocks/SM"] = arch["max_blocks_per_sm"]
    if regs > 0:
        per_warp = round_up(regs * warp, arch["reg_alloc_unit"])
        assumed_per_block = per_warp * round_up(warps_per_block, arch["sub_partitions"])
        if (regs > arch["max_regs_per_thread"] or per_warp * warps_per_block > arch["regs_per_block"]
                or assumed_per_block > arch["regs_per_block"]):
            limits["registers"] = 0
        else:
            warps_per_partition = (arch["regs_per_sm"] // arch["sub_partitions"]) // per_warp
            limits["registers"] = warps_per_partition * arch["sub_partitions"] // warps_per_block
    smem = round_up(static_smem + dynamic_smem + arch["smem_reserved_per_block"], arch["smem_alloc_unit"])
    if static_smem + dynamic_smem > arch["smem_max_per_block"]:
        limits["shared memory"] = 0
    else:
        limits["shared memory"] = arch["smem_per_sm"] // smem
    blocks = min(limits.values())
    # Name the resource that binds; on a tie the fixed per-SM caps, since a kernel that reaches
    # them is not held back by its registers or shared memory.
    order = ["warps", "threads", "blocks/SM", "registers", "shared memory"]
    limiter = next(name for name in order if limits[name] == blocks)
    if limiter == "threads":
        limiter = "warps"
    warps = blocks * warps_per_block
    return {
        "blocks": blocks,
        "warps": warps,
        "percent": 100.0 * warps / arch["max_warps_per_sm"],
        "limiter": limiter if blocks > 0 else limiter + " (does not fit)",
    }


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_BARRIERS = re.compile(r"used (\d+) barriers")


def parse_ptxas(text):
    """Kernels in ptxas -v output, in order: dicts with mangled, arch, regs, smem, barriers,
    stack, spill_stores, spill_loads. Device functions (no "Compiling entry") are skipped."""
    kernels = {}
    order = []
    current = None  # the entry whose "Used ..." line comes next
    props_for = None  # the function whose frame line comes next
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            if current not in kernels:
                kernels[current] = {"mangled": current, "arch": m.group(2), "regs": 0, "smem": 0, "barriers": 0,
                                    "stack": 0, "spill_stores": 0, "spill_loads": 0}
                order.append(current)
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group(1)
            continue
        m = _FRAME.search(line)
        if m and props_for in kernels:
            k = kernels[props_for]
            k["stack"], k["spill_stores"], k["spill_loads"] = (int(g) for g in m.groups())
            props_for = None
            continue
        m = _USED.search(line)
        if m and current in kernels:
            k = kernels[current]
            k["regs"] = int(m.group(1))
            s = _SMEM.search(line)
            k["smem"] = int(s.group(1)) if s else 0
            b = _BARRIERS.search(line)
            k["barriers"] = int(b.group(1)) if b else 0
            current = None
    return [kernels[name] for name in order]




def parse_maxntid(ptx):
    """__launch_bounds__ from PTX: {mangled entry: threads per block} for entries with .maxntid."""
    bounds = {}
    for m in re.finditer(r"\.entry\s+(\S+?)\s*\(", ptx):
        name = m.group(1)
        body_start = ptx.find("{", m.end())
        header = ptx[m.end():body_start]
        t = re.search(r"\.maxntid\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", header)
        if t:
            x, y, z = (int(g) if g else 1 for g in t.groups())
            bounds[name] = x * y * z
    return bounds


def file_threads(source_text):
    m = re.search(r"constexpr\s+int\s+kThreads\s*=\s*(\d+)\s*;", source_text)
    return int(m.group(1)) if m else None


def block_size(demangled, mangled, maxntid, source_name, source_text):
    """(threads per block, where the number comes from)."""
    if mangled in maxntid:
        return maxntid[mangled], "__launch_bounds__"
    for pattern, threads, where in BLOCK_SIZES:
        if re.search(pattern, demangled):
            return threads, where
    threads = file_threads(source_text)
    if threads:
        return threads, source_name + ": kThreads"
    return 256, "assumed (no launch bounds or known launch site)"


def demangle(names, cxxfilt="c++filt"):
    if not names:
        return []
    try:
        out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        if len(lines) == len(names):
            return lines
    except (OSError, subprocess.CalledProcessError):
        pass
    return list(names)


def short_name(demangled, limit=90):
    """The kernel's name without namespaces, parameters or the anonymous-namespace marker."""
    s = demangled.replace("(anonymous namespace)::", "")
    depth = 0
    for i, ch in enumerate(s):
        if ch in "<{[":
            depth += 1
        elif ch in ">}]":
            depth -= 1
        elif ch == "(" and depth == 0:
            s = s[:i]
            break
    s = re.sub(r"^void ", "", s)  # templates demangle with their return type
    s = re.sub(r"^(ae::cuda::|ae::)+", "", s)
    s = re.sub(r"\bae::cuda::", "", s)
    if len(s) > limit:
        s = s[:limit - 1] + "…"
    return s


def compile_file(nvcc, cu, workdir, extra_flags):
    """ptxas -v text and PTX of one source, or (None, error text)."""
    stem = os.path.splitext(os.path.basename(cu))[0]
    keep = os.path.join(workdir, stem)
    os.makedirs(keep, exist_ok=True)
    cmd = [nvcc, "-arch=sm_90", "-std=c++20", "--expt-relaxed-constexpr", "-I" + ROOT, "-Xptxas", "-v", "-cubin",
           "-keep", "--keep-dir", keep, "-o", os.path.join(keep, stem + ".cubin"), cu] + extra_flags
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        return None, None, (run.stderr or run.stdout).strip().splitlines()[-1:] or ["failed"]
    ptx = ""
    for name in os.listdir(keep):
        if name.endswith(".ptx"):
            with open(os.path.join(keep, name), encoding="utf-8", errors="replace") as f:
                ptx += f.read()
    return run.stderr + run.stdout, ptx, None


def rows_for(cu, ptxas_text, ptx, cxxfilt="c++filt"):
    with open(cu, encoding="utf-8") as f:
        source_text = f.read()
    kernels = [k for k in parse_ptxas(ptxas_text) if k["arch"] == "sm_90"]
    names = demangle([k["mangled"] for k in kernels], cxxfilt)
    bounds = parse_maxntid(ptx)
    rows = []
    for k, name in zip(kernels, names):
        threads, where = block_size(name, k["mangled"], bounds, os.path.basename(cu), source_text)
        occ = occupancy(k["regs"], k["smem"], threads)
        rows.append(dict(k, file=os.path.basename(cu), name=short_name(name), block=threads, block_from=where, **occ))
    return rows


def markdown(rows):
    out = ["| file | kernel | regs | smem (B) | spill st/ld (B) | stack (B) | block | block from | blocks/SM | "
           "occupancy | limiter |",
           "|---|---|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        out.append("| {file} | `{name}` | {regs} | {smem} | {spill_stores}/{spill_loads} | {stack} | {block} | "
                   "{block_from} | {blocks} | {percent:.1f}% | {limiter} |".format(**r))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="kernel sources (default: kernels/cuda/*.cu)")
    ap.add_argument("--nvcc", default="/usr/local/cuda/bin/nvcc")
    ap.add_argument("--flag", action="append", default=[], help="extra nvcc flag (repeatable)")
    args = ap.parse_args(argv)
    files = args.files or sorted(os.path.join(ROOT, "kernels", "cuda", f)
                                 for f in os.listdir(os.path.join(ROOT, "kernels", "cuda")) if f.endswith(".cu"))
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="ptxas_table_") as work:
        for cu in files:
            print("compiling " + os.path.relpath(cu, ROOT), file=sys.stderr, flush=True)
            text, ptx, error = compile_file(args.nvcc, cu, work, args.flag)
            if error:
                failures.append((os.path.basename(cu), error[0]))
                continue
            rows.extend(rows_for(cu, text, ptx))
    print(markdown(rows))
    if failures:
        print()
        for name, error in failures:
            print("- {}: not compiled ({})".format(name, error))
    print("\nsm_90 limits: 65536 registers/SM (units of 256 per warp, 4 sub-partitions), 2048 threads, 64 warps, "
          "32 blocks, 228 KiB shared memory/SM with 1 KiB reserved per block. Static shared memory only; "
          "dynamic shared memory (AE_LAUNCH's shared_bytes) lowers occupancy further.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
