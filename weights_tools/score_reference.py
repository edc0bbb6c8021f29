#!/usr/bin/python3
"""PyTorch reference scores of real photos for tests/parity/test_score_parity.cpp.

Run with Debian's torch (`/usr/bin/python3`), never at aesthete run time.

  score_reference.py generate --photos PHOTO_DIR --out DIR
      DIR/model.pth      state dict (torch.save) of a seed-head ResNet-18 with random weights and
                         non-trivial BatchNorm statistics (make_reference.py's randomise())
      DIR/square224.png  a 224x224 crop of PHOTO_DIR/chelsea.png (eval resizing is then the identity)
      DIR/digest.txt     the generic-model digest of model.pth as model/user_file.h defines it
      DIR/scores.csv     file,size,score for every photo and size: size 224 is aesthete's documented
                         eval preprocessing (train/preprocess.h):
                           PIL open -> RGB -> ToTensor -> F.interpolate(size=(224, 224), mode='bilinear',
                           align_corners=False, antialias=False) -> ImageNet Normalize
                         and size "native" is the same without the resize; the score is model(x) in
                         eval mode (the seed head's z-score output).
"""
import argparse
import hashlib
import os
import sys

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import AestheteNet, randomise  # noqa: E402  (the same model definition as the parity test)

# A JPEG and PNGs of different sizes, plus the 224x224 crop written by generate().
PHOTOS = ["grace_hopper.jpg", "china.jpg", "chelsea.png", "coffee.png", "square224.png"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def model_digest(state):
    """SHA-256 over the state dict in order, without adapters and num_batches_tracked: per entry the
    name, a 0 byte, the shape as decimal sizes joined by ',', a 0 byte, the float32 values
    little-endian (model/user_file.h, model_digest)."""
    h = hashlib.sha256()
    for name, t in state.items():
        if name.endswith("num_batches_tracked") or ".adapter1." in name or ".adapter2." in name:
            continue
        h.update(name.encode() + b"\0")
        h.update(",".join(str(d) for d in t.shape).encode() + b"\0")
        h.update(t.detach().contiguous().to(torch.float32).numpy().astype("<f4").tobytes())
    return "sha256:" + h.hexdigest()


def preprocess(path, size):
    x = transforms.ToTensor()(Image.open(path).convert("RGB"))[None]
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)


def generate(photo_dir, out_dir, threads):
    torch.set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(20240612)
    torch.manual_seed(11)
    model = AestheteNet("seed", adapters=False)
    randomise(model, gen)
    model.eval()
    torch.save(model.state_dict(), f"{out_dir}/model.pth")
    with open(f"{out_dir}/digest.txt", "w") as f:
        f.write(model_digest(model.state_dict()) + "\n")

    Image.open(f"{photo_dir}/chelsea.png").convert("RGB").crop((100, 40, 324, 264)).save(f"{out_dir}/square224.png")
    rows = ["file,size,score"]
    with torch.no_grad():
        for name in PHOTOS:
            path = f"{out_dir}/{name}" if name == "square224.png" else f"{photo_dir}/{name}"
            for size, label in ((224, "224"), (None, "native")):
                score = float(model(preprocess(path, size))[0, 0])
                rows.append(f"{path},{label},{score:.9g}")
    with open(f"{out_dir}/scores.csv", "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"wrote {len(rows) - 1} reference scores to {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--photos", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    generate(a.photos, a.out, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
