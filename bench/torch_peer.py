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
    def __init__(self, cin, cout, stride, adapters=False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        # aesthete's residual adapters: a parallel 1x1 convolution beside each 3x3 one, added before
        # its BatchNorm (weights_tools/make_reference.py, the parity tests' model).
        self.adapter1 = nn.Conv2d(cin, cout, 1, stride, bias=False) if adapters else None
        self.adapter2 = nn.Conv2d(cout, cout, 1, bias=False) if adapters else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        if self.adapter1 is not None:
            out = out + self.adapter1(x)
        out = self.relu(self.bn1(out))
        mid = out
        out = self.conv2(mid)
        if self.adapter2 is not None:
            out = out + self.adapter2(mid)
        out = self.bn2(out)
        return self.relu(out + identity)


def resnet18(adapters=False):
    """torchvision.models.resnet18() (1000 classes), without the torchvision dependency."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(nn.Sequential(BasicBlock(cin, cout, stride, adapters), BasicBlock(cout, cout, 1, adapters)))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def seed_model(adapters=False):
    head = nn.Sequential(nn.Linear(1000, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 256), nn.PReLU(), nn.Dropout(0.5), nn.BatchNorm1d(256),
                         nn.Linear(256, 1))
    return nn.Sequential(resnet18(adapters), head)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(step, a, dev):
    """Seconds per call of step() over a.steps calls, after a.warmup untimed ones."""
    for _ in range(a.warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(dev)
    return (time.perf_counter() - t0) / a.steps


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
    ap.add_argument("--what", choices=("model", "train", "inference", "enhance", "personalise", "score"), default="model",
                    help="model: training step and inference (or train, inference alone); enhance: eval forward + "
                         "input gradient, weights frozen; personalise: an adapters-mode step (frozen backbone); "
                         "score: a folder of JPEG/PNG photos (--folder) end to end, CSV on stdout")
    ap.add_argument("--folder", help="--what score: the photos")
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

    if a.what == "personalise":
        return personalise(a, dev, autocast, f"[pytorch {torch.__version__} {settings}]")
    if a.what == "score":
        return score_folder(a, dev)
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

        s = seconds_per_step(estep, a, dev)
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

    imgs = a.batch * a.steps
    gflop = 3.63 * (a.size / 224.0) ** 2
    if a.what in ("model", "train"):
        net.train()
        train_s = seconds_per_step(step, a, dev) * a.steps
        print(f"train-step  device={name} batch={a.batch} size={a.size}  {imgs / train_s:.2f} images/s  "
              f"({3 * gflop * imgs / train_s:.1f} GFLOP/s at 3x forward)  {tag}")

    if a.what in ("model", "inference"):
        net.eval()
        with torch.no_grad(), autocast():
            infer_s = seconds_per_step(lambda: net(x).cpu(), a, dev) * a.steps
        print(f"inference   device={name} batch={a.batch} size={a.size}  {imgs / infer_s:.2f} images/s  "
              f"({gflop * imgs / infer_s:.1f} GFLOP/s)  {tag}")


def personalise(a, dev, autocast, tag):
    """An adapters-mode personalisation step as aesthete's (train/personalise.cpp configure_mode):
    adapters, every BatchNorm's affine parameters and the head train, the convolutions and fc are
    frozen, BatchNorm in train mode; two Adams (weight decay 0.01 on adapters and BatchNorm, none on
    the head), MSE."""
    net = seed_model(adapters=True).to(dev).to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    body = [p for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    body += [p for name, p in net.named_parameters() if "adapter" in name]
    head = list(net[1].parameters())
    for p in body + head:
        p.requires_grad_(True)
    opts = [torch.optim.Adam(body, lr=1e-3, weight_decay=0.01), torch.optim.Adam(head, lr=1e-3)]
    x = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
    t = torch.rand(a.batch, 1, device=dev) * 2 - 1
    loss_fn = nn.MSELoss()

    def step():
        for o in opts:
            o.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(net(x).float(), t)
        loss.backward()
        for o in opts:
            o.step()
        return loss.item()

    net.train()
    s = seconds_per_step(step, a, dev)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    print(f"personalise-step mode=adapters device={dev} batch={a.batch} size={a.size}  {1e3 * s:.1f} ms/step  "
          f"{a.batch / s:.2f} images/s  ({trainable} trainable parameters)  {tag}")


def score_folder(a, dev):
    """What a person writes with PyTorch and PIL to score a folder: decode, resize to the network's
    input (bilinear, as aesthete's --size), normalise, batches of --batch, eval forward, a CSV row per
    photo on stdout. Timed from outside (bench/cpu_suite.sh) like `aesthete score`."""
    import os

    import numpy as np
    from PIL import Image

    net = seed_model().to(dev).to(memory_format=torch.channels_last).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    files = sorted(os.path.join(a.folder, f) for f in os.listdir(a.folder)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    print("path,score")
    with torch.no_grad():
        for i in range(0, len(files), a.batch):
            chunk = files[i:i + a.batch]
            arrays = [np.asarray(Image.open(f).convert("RGB").resize((a.size, a.size), Image.BILINEAR)) for f in chunk]
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last).to(dev)
            for f, z in zip(chunk, net(x).squeeze(1).tolist()):
                print(f"{f},{z:.6f}")


if __name__ == "__main__":
    main()
