"""Shared fixtures of the aesthete module's tests: small generated data and models made with the
`aesthete` binary of the same build (so that the module and the command line can be compared), and
the real test photos of tests/support/files.h (scripts/fetch_test_photos.sh).

Everything is made once per build under AE_BUILD_DIR/python_fixtures (a file lock lets the test
files run in parallel under `ctest -j`) and remade when the binary is newer.
"""
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

SOURCE = pathlib.Path(os.environ.get("AE_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("AE_BUILD_DIR", SOURCE / "build"))
BINARY = BUILD / "aesthete"
ROOT = BUILD / "python_fixtures"
SIZE = 32  # network side of the generated models: small, so that the tests take seconds

REAL_PHOTOS = ["chelsea.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg", "china.jpg"]


def run(*args, **kw):
    """Runs a command; a failure shows its output."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


class Data:
    def __init__(self, root):
        self.root = root
        self.images = root / "people" / "images"
        self.train_csv = root / "people" / "train.csv"
        self.workers_csv = root / "people" / "workers.csv"
        self.generic = root / "generic" / "model.safetensors"
        self.other = root / "other" / "model.safetensors"  # another generic model (another seed)

    def photos(self, n):
        """The first n generated photos (PNG), sorted."""
        names = sorted(p for p in self.images.iterdir() if p.suffix == ".png")
        return [str(p) for p in names[:n]]

    def person(self):
        """(id, [photo paths], [z ratings]) of the first person in workers.csv."""
        rows = {}
        with open(self.workers_csv) as f:  # FLICKR-AES's workers format: header, then "row worker image z"
            for line in list(f)[1:]:
                _, worker, image, z = line.split()
                rows.setdefault(worker, []).append((str(self.images / image), float(z)))
        user = sorted(rows)[0]
        return user, [p for p, _ in rows[user]], [z for _, z in rows[user]]


def _make(root):
    stamp = root / "ready"
    if stamp.exists() and stamp.stat().st_mtime >= BINARY.stat().st_mtime:
        return
    stamp.unlink(missing_ok=True)
    for d in ("people", "generic", "other"):
        shutil.rmtree(root / d, ignore_errors=True)
    run(BINARY, "make-dataset", "--people", "--out", root / "people", "--count", "140", "--people-images", "60",
        "--ratings-per-person", "40", "--train-raters", "4")
    common = ["--images", root / "people" / "images", "--size", SIZE, "--resize-to", "36", "--epochs", "1",
              "--batch", "32", "--device", "cpu", "--workers", "2"]
    train_csv = root / "people" / "train.csv"
    run(BINARY, "train", "--train-csv", train_csv, "--out", root / "generic", "--seed", "1", "--head", "linear", *common)
    # Another generic model (another digest) for the refusal of a user trained on it, and the command
    # line's run that test_train.py repeats with aesthete.train (same options): 24 photos suffice.
    small_csv = root / "people" / "train_small.csv"
    small_csv.write_text("".join(open(train_csv).readlines()[:25]))
    run(BINARY, "train", "--train-csv", small_csv, "--out", root / "other", "--seed", "2", "--head", "linear", *common)
    stamp.write_text("made by python/tests/conftest.py\n")


@pytest.fixture(scope="session")
def data():
    if not BINARY.exists():
        pytest.fail(f"the aesthete binary is not built: {BINARY}")
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _make(ROOT)
    d = Data(ROOT)
    for f in (d.train_csv, d.workers_csv, d.generic, d.other):
        assert f.exists(), f"fixture {f} was not made (see python/tests/conftest.py)"
    return d


@pytest.fixture(scope="session")
def model(data):
    import aesthete
    return aesthete.load(data.generic, device="cpu")


@pytest.fixture(scope="session")
def real_photos():
    """Paths of real photos (Debian sample photos), or a skip saying why there are none."""
    folder = BUILD / "test-photos"
    with open(ROOT.parent / ".python_fixtures_photos.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((folder / n).exists() for n in REAL_PHOTOS):
            r = subprocess.run(["bash", str(SOURCE / "scripts" / "fetch_test_photos.sh"), str(folder)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"real test photos unavailable (scripts/fetch_test_photos.sh {folder}: {r.stderr.strip()})")
    return [str(folder / n) for n in REAL_PHOTOS]


def cli_scores(paths, *options, global_args=()):
    """path -> (z text, stars text) from `aesthete score` CSV output. The options go after the
    paths: `score --user F p1 p2` takes p2 for a second --user (CLI11 multi-option), a CLI bug.
    global_args go before the command (`aesthete --activations bf16 score ...`)."""
    r = run(BINARY, *global_args, "score", *paths, "--device", "cpu", *options)
    lines = r.stdout.splitlines()
    assert lines[0] == "path,score,stars", lines[0]
    out = {}
    for line in lines[1:]:
        path, z, stars = line.rsplit(",", 2)
        out[path] = (z, stars)
    return out


sys.path.insert(0, str(pathlib.Path(__file__).parent))
