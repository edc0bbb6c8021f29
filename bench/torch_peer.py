#!/usr/bin/env python3
"""The PyTorch peer of `aesthete bench --what model`: the same seed-head ResNet-18 training
step (forward, MSE, backward, Adam) and inference, same batch and size, eager mode,
channels_last, float32. Prints lines in the same format so bench/compare.sh can take ratios.

Run with a PyTorch that has torchvision, e.g. Debian's: /usr/bin/python3 bench/torch_peer.py
"""
import argparse
import time

import torch
import torch.nn as nn
import torchvision


def seed_model():
    net = torchvision.models.resnet18()
    head = nn.Sequential(nn.Linear(1000, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 1))
    return nn.Sequential(net, head)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32, like aesthete's f32 path
    torch.backends.cudnn.allow_tf32 = False
    net = seed_model().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
    t = torch.rand(a.batch, 1, device=dev) * 2 - 1
    loss_fn = nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), t)
        loss.backward()
        opt.step()
        return loss.item()

    net.train()
    step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(dev)
    train_s = time.perf_counter() - t0

    net.eval()
    with torch.no_grad():
        net(x).cpu()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            net(x).cpu()
        infer_s = time.perf_counter() - t0
    imgs = a.batch * a.steps
    gflop = 3.63 * (a.size / 224.0) ** 2
    name = "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"
    print(f"train-step  device={name} batch={a.batch} size={a.size}  {imgs / train_s:.2f} images/s  "
          f"({3 * gflop * imgs / train_s:.1f} GFLOP/s at 3x forward)  [pytorch {torch.__version__}]")
    print(f"inference   device={name} batch={a.batch} size={a.size}  {imgs / infer_s:.2f} images/s  "
          f"({gflop * imgs / infer_s:.1f} GFLOP/s)  [pytorch {torch.__version__}]")


if __name__ == "__main__":
    main()
