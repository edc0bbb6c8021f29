#!/usr/bin/python3
"""PyTorch reference data for aesthete's parity tests (tests/parity/test_parity.cpp).

Run with Debian's torch (`/usr/bin/python3`), never at aesthete run time.

  make_reference.py generate --out DIR
      Writes, as real torch.save files:
        DIR/model_seed.pth      state dict of a seed-head ResNet-18 (random weights, non-trivial BN statistics)
        DIR/model_adapter.pth   the same architecture with non-zero residual adapters
        DIR/model_*_train.pth   the same two with centred BatchNorm betas, for the train-mode cases
        DIR/case_<name>.pth     one plain dict per case: input (NCHW), target, output, loss, grad.<param>,
                                grad.input (NCHW), adam_losses (the loss after each of 3 Adam steps, lr 1e-3),
                                adam_losses_perturbed (the same from gradients with
                                1e-4 relative noise: the conditioning of the Adam comparison), and in
                                train mode stats1.<bn buffer> (running statistics after the first forward),
                                and spread.<output|grad.*> (how far each moves when the input gets 2e-6
                                relative noise: the conditioning of each comparison)
      Dropout p is 0 in every case so that train mode is deterministic on both sides.

  make_reference.py check-load --weights FILE.safetensors --input CASE.pth --out OUT.pth
      Loads a safetensors file written by aesthete into the PyTorch model named by its metadata with
      load_state_dict(strict=True), runs the case's input in eval mode and saves {"output": ...}.
"""
import argparse
import json
import struct
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock


def adapted_block_forward(self, x):
    """BasicBlock with parallel 1x1 adapters added before each 3x3 conv's BatchNorm."""
    identity = x
    out = self.relu(self.bn1(self.conv1(x) + self.adapter1(x)))
    out = self.bn2(self.conv2(out) + self.adapter2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(out + identity)


class AestheteNet(torchvision.models.ResNet):
    """torchvision resnet18 with aesthete's heads and adapters; parameter names are the contract."""

    def __init__(self, head="seed", adapters=False, dropout=0.5):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=1 if head == "linear" else 1000)
        self.head_type = head
        if adapters:
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in layer:
                    cin, cout = block.conv1.in_channels, block.conv1.out_channels
                    block.adapter1 = nn.Conv2d(cin, cout, 1, stride=block.conv1.stride, bias=False)
                    block.adapter2 = nn.Conv2d(cout, cout, 1, bias=False)
                    nn.init.zeros_(block.adapter1.weight)
                    nn.init.zeros_(block.adapter2.weight)
                    block.forward = types.MethodType(adapted_block_forward, block)
        if head == "seed":
            self.head = nn.Sequential(
                nn.Linear(1000, 256), nn.PReLU(), nn.Dropout(dropout), nn.BatchNorm1d(256),
                nn.Linear(256, 256), nn.PReLU(), nn.Dropout(dropout), nn.BatchNorm1d(256),
                nn.Linear(256, 1))

    def forward(self, x):
        y = super().forward(x)
        return self.head(y) if self.head_type == "seed" else y


def randomise(model, gen):
    """Random weights with realistic, non-trivial BatchNorm statistics and affine parameters.

    BatchNorm betas are positive (1.5..2.5 gamma), so only a few per cent of ReLU inputs are
    negative and few sit within rounding distance of the kink: a float32 rounding difference that
    moves an activation across a ReLU kink changes gradients discontinuously, and with beta = 0 a
    224x224 batch has several such elements, which would make any gradient comparison measure luck.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(0.6 + 0.8 * torch.rand(c, generator=gen))
                m.bias.copy_(m.weight * (1.5 + torch.rand(c, generator=gen)))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.1 + 0.3 * torch.rand(m.weight.shape, generator=gen))
        # Running statistics measured on random data (so activations stay well scaled in eval mode),
        # then perturbed so that they are clearly not the batch statistics of the test input.
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = None  # cumulative average over the calibration batches
                m.reset_running_stats()
        model.train()
        set_dropout(model, 0.0)  # the statistics eval mode will see (dropout is the identity there)
        for _ in range(2):
            model(torch.randn(4, 3, 160, 160, generator=gen))
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.momentum = 0.1
                std = m.running_var.sqrt()
                m.running_mean += 0.1 * std * torch.randn(c, generator=gen)
                m.running_var *= 0.85 + 0.3 * torch.rand(c, generator=gen)
                m.num_batches_tracked.fill_(int(torch.randint(1, 5000, (1,), generator=gen)))


def set_dropout(model, p):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def load_model(model_path, adapters, train):
    model = AestheteNet("seed", adapters=adapters, dropout=0.0)
    model.load_state_dict(torch.load(model_path))
    set_dropout(model, 0.0)
    model.train(train)
    return model


def adam_losses(model, x, target, grad_noise=0.0, gen=None):
    """Loss after each of 3 torch.optim.Adam steps (lr 1e-3), starting from the gradients already in
    model. With grad_noise > 0 every gradient gets Gaussian noise of grad_noise * rms(grad) first."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        if grad_noise > 0:
            with torch.no_grad():
                for p in model.parameters():
                    rms = p.grad.pow(2).mean().sqrt()
                    p.grad += grad_noise * rms * torch.randn(p.shape, generator=gen)
        opt.step()
        opt.zero_grad()
        step_loss = F.mse_loss(model(x), target)
        step_loss.backward()
        losses.append(float(step_loss))
    return torch.tensor(losses, dtype=torch.float32)


# Gradient noise for the conditioning estimate: the relative gradient error the parity test
# tolerates, so the spread it causes is what an implementation passing the gradient checks may show.
GRAD_NOISE = 1e-4
INPUT_NOISE = 2e-6


def relative_error(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def run_case(model_path, adapters, train, batch, height, width, gen, threads):
    torch.set_num_threads(threads)
    model = load_model(model_path, adapters, train)
    x = torch.randn(batch, 3, height, width, generator=gen)
    target = torch.randn(batch, 1, generator=gen)
    x_in = x.clone().requires_grad_(True)
    out = model(x_in)
    loss = F.mse_loss(out, target)
    loss.backward()
    ref = {"input": x, "target": target, "output": out.detach().clone(), "loss": loss.detach().reshape(1),
           "grad.input": x_in.grad.detach().clone()}
    for name, p in model.named_parameters():
        ref["grad." + name] = p.grad.detach().clone()
    if train:  # running statistics after this one train-mode forward
        for name, b in model.state_dict().items():
            if "running_" in name or "num_batches_tracked" in name:
                ref["stats1." + name] = b.clone()
    ref["adam_losses"] = adam_losses(model, x, target)

    # Conditioning of the gradient comparison: the same forward/backward from an input with 2e-6
    # relative noise, about the rounding error float32 accumulates through the network. Where that
    # moves a gradient tensor (activations crossing a ReLU kink, cancellation in the train-mode
    # BatchNorm backward), another float32 implementation may legitimately differ as much.
    model = load_model(model_path, adapters, train)
    x_noisy = (x * (1 + INPUT_NOISE * torch.randn(x.shape, generator=gen))).requires_grad_(True)
    out_noisy = model(x_noisy)
    F.mse_loss(out_noisy, target).backward()
    spread = {"output": out_noisy.detach(), "grad.input": x_noisy.grad}
    for name, p in model.named_parameters():
        spread["grad." + name] = p.grad
    for key, t in spread.items():
        ref["spread." + key] = torch.tensor([relative_error(t, ref[key])], dtype=torch.float32)

    # Adam at lr 1e-3 takes sign-like first steps, so gradient elements near zero flip the direction
    # of a whole step on rounding noise and the losses after a few steps are ill-conditioned
    # (especially in train mode). Measure that: the same run from gradients with GRAD_NOISE noise.
    model = load_model(model_path, adapters, train)
    F.mse_loss(model(x), target).backward()
    ref["adam_losses_perturbed"] = adam_losses(model, x, target, GRAD_NOISE, gen)
    return ref


CASES = [
    # name, model, adapters, train, batch, height, width
    # Train mode at batch 4: with 2 samples the head's BatchNorm1d maps every feature to about
    # +-gamma + beta, its backward is pure cancellation and the comparison would measure only rounding.
    ("seed_train_224", "model_seed_train.pth", False, True, 4, 224, 224),
    ("seed_eval_224", "model_seed.pth", False, False, 2, 224, 224),
    ("adapter_train_224", "model_adapter_train.pth", True, True, 4, 224, 224),
    ("adapter_eval_224", "model_adapter.pth", True, False, 2, 224, 224),
    ("seed_eval_odd", "model_seed.pth", False, False, 1, 161, 217),
    ("adapter_eval_odd", "model_adapter.pth", True, False, 1, 161, 217),
]
# No train-mode case at batch 1: BatchNorm1d refuses one sample in train mode (PyTorch and aesthete).


def generate(out_dir, threads):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(20240611)
    torch.manual_seed(7)  # default initialisation of the layers
    seed_model = AestheteNet("seed", adapters=False)
    randomise(seed_model, gen)
    torch.save(seed_model.state_dict(), f"{out_dir}/model_seed.pth")

    # The adapter model shares the generic model's weights and adds non-zero adapters.
    adapter_model = AestheteNet("seed", adapters=True)
    adapter_model.load_state_dict(seed_model.state_dict(), strict=False)
    with torch.no_grad():
        for name, p in adapter_model.named_parameters():
            if ".adapter" in name:
                # About a fifth of a Kaiming-scaled conv: clearly non-zero, yet small enough that the
                # running statistics (measured on the generic model) still fit.
                fan_in = p.shape[1]
                p.copy_((0.3 / fan_in ** 0.5) * torch.randn(p.shape, generator=gen))
    torch.save(adapter_model.state_dict(), f"{out_dir}/model_adapter.pth")

    # Train-mode variants: the same weights with BatchNorm betas centred (0.2 gamma N(0,1)). With the
    # positive betas above, ReLUs are nearly the identity, and in train mode the gradient reaching
    # a BatchNorm bias through the next block's batch normalisation then nearly cancels exactly, so
    # the comparison would measure float32 cancellation instead of the implementation.
    for src, dst in (("model_seed.pth", "model_seed_train.pth"), ("model_adapter.pth", "model_adapter_train.pth")):
        state = torch.load(f"{out_dir}/{src}")
        for key in list(state):
            if key.endswith(".bias") and key[:-5] + ".running_mean" in state:
                gamma = state[key[:-5] + ".weight"]
                state[key] = 0.2 * gamma * torch.randn(gamma.shape, generator=gen)
        torch.save(state, f"{out_dir}/{dst}")

    for name, model_file, adapters, train, batch, h, w in CASES:
        ref = run_case(f"{out_dir}/{model_file}", adapters, train, batch, h, w, gen, threads)
        ref["meta.adapters"] = torch.tensor([1 if adapters else 0])
        ref["meta.train"] = torch.tensor([1 if train else 0])
        ref["meta.model_" + model_file.replace(".pth", "")] = torch.tensor([1])
        torch.save(ref, f"{out_dir}/case_{name}.pth")
    print(f"wrote {len(CASES)} cases to {out_dir}")


def read_safetensors(path):
    """Minimal safetensors reader (Debian has no `safetensors` package): JSON header + raw LE data."""
    dtypes = {"F32": torch.float32, "I64": torch.int64, "U8": torch.uint8}
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtypes[e["dtype"]]) if end > begin \
            else torch.empty(0, dtype=dtypes[e["dtype"]])
        tensors[name] = t.reshape(e["shape"]).clone()
    return tensors, meta


def check_load(weights, input_case, out, threads):
    torch.set_num_threads(threads)
    state, meta = read_safetensors(weights)
    model = AestheteNet(meta.get("head", "seed"), adapters=meta.get("adapters", "false") == "true")
    model.load_state_dict(state, strict=True)  # raises on any missing/unexpected name or shape
    model.eval()
    x = torch.load(input_case)["input"]
    with torch.no_grad():
        y = model(x)
    torch.save({"output": y}, out)
    print(f"loaded {len(state)} tensors (head {meta.get('head')}, adapters {meta.get('adapters')}) into PyTorch")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("check-load")
    c.add_argument("--weights", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.out, a.threads)
    else:
        check_load(a.weights, a.input, a.out, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
