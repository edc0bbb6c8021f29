#!/usr/bin/env python3
"""The PyTorch peer of `aesthete bench --what model`: the same seed-head ResNet-18 training
step (forward, MSE, backward, Adam) and inference, same batch and size, eager mode,
channels_last. Prints lines in the same format so bench/compare.sh can take ratios.

Precision (--precision): f32 (default) is plain float32 with TF32 off for cuDNN and matmuls, the
precision of aesthete's f32 kernels; tf32 allows TF32 tensor cores; bf16 runs forward and loss
under torch.autocast(bfloat16) with float32 weights. On CUDA, cudnn.benchmark is on (cuDNN picks its
fastest algorithm during the warm-up steps), as a tuned PyTorch run would have it.

ResNet-18 is defined here, layer for layer as torchvision's (same convolutions, batch norms, pooling
and fc), so the peer runs where torchvision is not installed.

  /usr/bin/python3 bench/torch_peer.py                        # Debian's CPU PyTorch
  python3 bench/torch_peer.py --device cuda --batch 128       # a CUDA PyTorch
"""
import argparse
import contextlib
import time

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet18():
    """torchvision.models.resnet18() (1000 classes), without the torchvision dependency."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def seed_model():
    head = nn.Sequential(nn.Linear(1000, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 1))
    return nn.Sequential(resnet18(), head)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def set_precision(precision, device):
    """Sets TF32 use for this precision and returns a description of the effective settings."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return (f"precision={precision} cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} "
            f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} "
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (cuDNN autotuning, caches)")
    ap.add_argument("--precision", choices=("f32", "tf32", "bf16"), default="f32")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--what", choices=("model", "enhance"), default="model",
                    help="model: training step and inference; enhance: eval forward + input gradient, weights frozen")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"torch_peer: --device {a.device} but this PyTorch ({torch.__version__}) sees no CUDA GPU")
    settings = set_precision(a.precision, dev)

    def autocast():
        if a.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)

    net = seed_model().to(dev).to(memory_format=torch.channels_last)
    name = "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"
    tag = f"[pytorch {torch.__version__} {settings}]"
    if a.what == "enhance":
        # What an enhancement or saliency step is: the score's gradient with respect to the input
        # image, weights frozen, BatchNorm in eval mode.
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        xe = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
        xe.requires_grad_(True)

        def estep():
            xe.grad = None
            with autocast():
                y = net(xe).float().sum()
            y.backward()
            return xe.grad.sum().item()

        for _ in range(a.warmup):
            estep()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            estep()
        sync(dev)
        s = (time.perf_counter() - t0) / a.steps
        print(f"enhance-step device={name} batch={a.batch} size={a.size}  {a.batch / s:.2f} images/s  "
              f"({1e3 * s:.1f} ms/step)  {tag}")
        return
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
    t = torch.rand(a.batch, 1, device=dev) * 2 - 1
    loss_fn = nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(net(x).float(), t)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the device, like aesthete's item()

    net.train()
    for _ in range(a.warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(dev)
    train_s = time.perf_counter() - t0

    net.eval()
    with torch.no_grad(), autocast():
        for _ in range(a.warmup):
            net(x).cpu()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            net(x).cpu()
        infer_s = time.perf_counter() - t0
    imgs = a.batch * a.steps
    gflop = 3.63 * (a.size / 224.0) ** 2
    print(f"train-step  device={name} batch={a.batch} size={a.size}  {imgs / train_s:.2f} images/s  "
          f"({3 * gflop * imgs / train_s:.1f} GFLOP/s at 3x forward)  {tag}")
    print(f"inference   device={name} batch={a.batch} size={a.size}  {imgs / infer_s:.2f} images/s  "
          f"({gflop * imgs / infer_s:.1f} GFLOP/s)  {tag}")


if __name__ == "__main__":
    main()
