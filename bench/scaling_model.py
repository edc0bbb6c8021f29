#!/usr/bin/env python3
"""A cost MODEL (not a measurement) of data-parallel training of aesthete's seed-head ResNet-18 on
1-64 GPUs: compute per step against the gradient all-reduce per step, as aesthete does it today
(one all-reduce of one flat buffer after the whole backward, no overlap with the backward).

Every input is an assumption, printed with the table and settable on the command line:
  - work: 3 x the forward (forward + backward data + backward weights), 1.81 GMAC = 3.63 GFLOP per
    224-px image for the forward (bench/compare.sh uses the same figure);
  - achieved convolution throughput per GPU: --tflops (default 30: 45% of an H200's 67 TFLOP/s
    dense FP32; BF16 would be several times higher, making the all-reduce matter more);
  - gradient bytes: 12.0 M parameters (the full model's trainable count, `aesthete bench --what
    personalise`) x 4 bytes;
  - ring all-reduce time: 2 (N-1)/N x bytes / bus bandwidth + 2 (N-1) x latency, with bus bandwidth
    --nvlink GB/s within one 8-GPU node and --network GB/s per GPU across nodes (one 400 Gb/s NIC
    per GPU), latency --latency microseconds per hop.

  bench/scaling_model.py                 # markdown table for README "Beyond one machine"
  bench/scaling_model.py --tflops 120    # e.g. BF16 convolutions
"""
import argparse

PARAMS = 12.0e6
FWD_GFLOP = 3.63


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflops", type=float, default=30.0, help="achieved TFLOP/s per GPU")
    ap.add_argument("--nvlink", type=float, default=350.0, help="all-reduce bus bandwidth within a node, GB/s")
    ap.add_argument("--network", type=float, default=45.0, help="all-reduce bus bandwidth across nodes, GB/s")
    ap.add_argument("--latency", type=float, default=10.0, help="per-hop latency, microseconds")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--batches", default="64,256", help="per-GPU batch sizes")
    a = ap.parse_args()
    grad_bytes = PARAMS * 4
    print(f"Model, not measured: {a.tflops:g} TFLOP/s per GPU achieved, {grad_bytes / 1e6:.0f} MB of gradients, "
          f"ring all-reduce at {a.nvlink:g} GB/s within a node of {a.gpus_per_node} and {a.network:g} GB/s "
          f"across nodes, {a.latency:g} us per hop, no overlap of all-reduce and backward.\n")
    print("| GPUs | per-GPU batch | compute ms/step | all-reduce ms/step | scaling efficiency | images/s (model) |")
    print("|---|---|---|---|---|---|")
    for b in (int(x) for x in a.batches.split(",")):
        compute_s = 3 * FWD_GFLOP * 1e9 * b / (a.tflops * 1e12)
        for n in (1, 2, 4, 8, 16, 32, 64):
            if n == 1:
                ar_s = 0.0
            else:
                bw = (a.nvlink if n <= a.gpus_per_node else a.network) * 1e9
                ar_s = 2 * (n - 1) / n * grad_bytes / bw + 2 * (n - 1) * a.latency * 1e-6
            eff = compute_s / (compute_s + ar_s)
            print(f"| {n} | {b} | {1e3 * compute_s:.1f} | {1e3 * ar_s:.2f} | {100 * eff:.0f}% | "
                  f"{n * b / (compute_s + ar_s):,.0f} |")


if __name__ == "__main__":
    main()
