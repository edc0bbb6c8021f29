#!/usr/bin/python3
"""Writes real PyTorch checkpoint files for the C++ .pth reader tests (tests/unit/test_pth_torch_fixtures.cpp).

Run with Debian's torch: /usr/bin/python3 weights_tools/make_fixtures.py OUTDIR

For every file the reader should load, expected.json lists its tensors in file order with the shape, the torch
dtype and checksums of the values as the reader must return them (floats converted to float32, integers to
int64): sum, sum of |v|, a position-weighted sum (catches permuted or transposed data), the first 8 values, and
all values for small tensors. Files the reader must refuse are written next to them; the test checks the
message for each.
"""
import io
import json
import os
import sys

import torch
import torchvision


def expected_values(t):
    """The values the reader returns: float32 for floating dtypes, int64 otherwise, as float64 here."""
    flat = t.detach().reshape(-1)
    if flat.is_floating_point():
        return flat.float().double()
    return flat.long().double()


def describe(sd):
    out = []
    for name, t in sd.items():
        v = expected_values(t)
        weights = (torch.arange(v.numel()) % 7 + 1).double()
        entry = {
            "name": name,
            "shape": list(t.shape),
            "torch_dtype": str(t.dtype).replace("torch.", ""),
            "is_float": bool(t.is_floating_point()),
            "sum": float(v.sum()),
            "abssum": float(v.abs().sum()),
            "wsum": float((v * weights).sum()),
            "first": v[:8].tolist(),
        }
        if v.numel() <= 64:
            entry["values"] = v.tolist()
        out.append(entry)
    return out


def resnet18_state_dict():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    # Non-trivial BN buffers, so a reader that mixes them up fails the checksums.
    with torch.no_grad():
        for i, m in enumerate(x for x in model.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(100 + i)
    return model


def small_state_dict():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = lambda name: os.path.join(out, name)
    expected = {}

    r18 = resnet18_state_dict()
    sd = r18.state_dict()
    torch.save(sd, path("resnet18.pth"))
    expected["resnet18.pth"] = describe(sd)

    torch.manual_seed(2)
    dtypes = {
        "f64": torch.randn(3, 4, dtype=torch.float64),
        "f16": torch.tensor([1.0, -2.5, 65504.0, 6e-8, 1e-5, 0.0], dtype=torch.float16),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.tensor([-3, 0, 2 ** 40, -(2 ** 62)], dtype=torch.int64),
        "i32": torch.tensor([-7, 2 ** 31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, -1], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
    }
    torch.save(dtypes, path("dtypes.pth"))
    expected["dtypes.pth"] = describe(dtypes)

    base = torch.arange(12.0).reshape(3, 4)
    views = {
        "base": base,
        "transposed": base.t(),                          # non-contiguous, shares base's storage
        "row": base[1],                                  # offset view of the same storage
        "strided": base[:, ::2],                         # stride 2 in the last dim
        "offset": torch.arange(10.0)[2:5],               # storage of 10, offset 2
        "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),  # stride 0
    }
    torch.save(views, path("views.pth"))
    expected["views.pth"] = describe(views)

    small = small_state_dict().state_dict()
    torch.save({"state_dict": small, "epoch": 3, "lr": 0.1, "best": None, "flags": [True, False], "name": "run",
                "big": 2 ** 40, "neg": -5, "tuple": (1, 2, 3, 4)}, path("wrapped_state_dict.pth"))
    expected["wrapped_state_dict.pth"] = describe(small)
    torch.save({"model": small, "step": 10}, path("wrapped_model.pth"))
    expected["wrapped_model.pth"] = describe(small)

    buffer = io.BytesIO()
    torch.save(small, buffer)  # saved to a buffer: the members live under archive/
    with open(path("buffer.pth"), "wb") as f:
        f.write(buffer.getvalue())
    expected["buffer.pth"] = describe(small)

    torch.save(small, path("x.y.weights.pth"))  # prefix x.y.weights/
    expected["x.y.weights.pth"] = describe(small)

    params = {"w": torch.nn.Parameter(torch.tensor([1.5, -2.0])), "b": torch.tensor([3.0])}
    torch.save(params, path("parameter.pth"))  # uses torch._utils._rebuild_parameter
    expected["parameter.pth"] = describe(params)

    # Files to refuse.
    torch.save(small, path("legacy.pth"), _use_new_zipfile_serialization=False)
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))
    torch.jit.save(scripted, path("torchscript.pt"))
    torch.save(r18, path("whole_model.pth"))

    with open(path("expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
