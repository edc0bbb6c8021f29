"""aesthete.train is `aesthete train`: the same files in out, the same losses and model bytes for the same seed."""
import csv
import json
import struct

import pytest

import aesthete
from conftest import SIZE

FILES = ("model.safetensors", "last.safetensors", "metrics.csv", "report.html")
MEASURED = {"images_per_s", "seconds"}  # timings: the only columns two runs may differ in


def safetensors_parts(path):
    """(header as a dict, tensor bytes) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_train_writes_the_command_lines_files_with_the_same_numbers(data, tmp_path):
    # The command line's run: conftest.py's "other" model, `aesthete train --train-csv train_small.csv
    # --head linear --seed 2 --size 32 --resize-to 36 --epochs 1 --batch 32 --device cpu --workers 2`.
    cli, py = data.other.parent, tmp_path / "py"
    r = aesthete.train(data.root / "people" / "train_small.csv", data.images, py, head="linear", seed=2, size=SIZE,
                       resize_to=36, epochs=1, batch=32, device="cpu", workers=2)
    for name in FILES:
        assert (cli / name).is_file() and (py / name).is_file(), name
    assert (py / "model.safetensors").read_bytes() == (cli / "model.safetensors").read_bytes()
    # The training state: the same tensors and the same metadata but for the timings in its copy of metrics.csv.
    cli_header, cli_tensors = safetensors_parts(cli / "last.safetensors")
    py_header, py_tensors = safetensors_parts(py / "last.safetensors")
    assert py_tensors == cli_tensors
    assert py_header["__metadata__"].pop("metrics") != "" and cli_header["__metadata__"].pop("metrics") != ""
    assert py_header == cli_header

    cli_rows = list(csv.DictReader(open(cli / "metrics.csv")))
    py_rows = list(csv.DictReader(open(py / "metrics.csv")))
    assert len(cli_rows) == len(py_rows) == 1
    for a, b in zip(cli_rows, py_rows):
        assert {k: v for k, v in a.items() if k not in MEASURED} == {k: v for k, v in b.items() if k not in MEASURED}

    # The result is metrics.csv's rows as Python numbers (the CSV holds the doubles exactly).
    assert [e["epoch"] for e in r["epochs"]] == [1]
    for e, row in zip(r["epochs"], py_rows):
        for key in ("lr", "train_loss", "val_mse", "val_spearman", "val_pearson"):
            assert e[key] == float(row[key]), key
        assert e["skipped_images"] == int(row["skipped_images"])
    assert r["model"] == str(py / "model.safetensors") and r["report"] == str(py / "report.html")
    assert r["best_epoch"] == 1 and r["best_val_mse"] == min(e["val_mse"] for e in r["epochs"])
    assert not r["diverged"]

    # One report renderer (train/report_html.h), given the same settings by both front ends.
    def settings(path):
        return path.read_text().split("<h2>Settings</h2>")[1]

    assert settings(py / "report.html") == settings(cli / "report.html")
    assert "<h1>aesthete training report</h1>" in (py / "report.html").read_text()



def test_train_refuses_bad_options_with_the_engines_messages(data, tmp_path):
    with pytest.raises(aesthete.ArgumentError, match="head must be seed or linear"):
        aesthete.train(data.train_csv, data.images, tmp_path / "x", head="imagenet")
    with pytest.raises(aesthete.FileError, match="nothere.csv"):
        aesthete.train(tmp_path / "nothere.csv", data.images, tmp_path / "y", epochs=1, size=SIZE, resize_to=36,
                       device="cpu")
