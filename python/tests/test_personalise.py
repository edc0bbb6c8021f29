"""Model.personalise: the same training as `aesthete personalise`, from paths or arrays; save -> load -> score
round trip."""
import csv
import glob
import pathlib
import tempfile

import numpy as np
import pytest

import aesthete
from conftest import BINARY, SIZE, cli_scores, run

EPOCHS = 2


def test_personalise_save_load_score_round_trip(data, model, tmp_path):
    """A user file scores as `aesthete score --user` scores it (aesthete score reads the file)."""
    user, paths, ratings = data.person()
    paths, ratings = paths[:20], ratings[:20]
    u = model.personalise(paths, ratings, k=None, mode="adapters", epochs=EPOCHS, seed=0, user_id=user)
    assert u.id == user and u.metrics["n_train"] == len(paths) and u.metrics["n_test"] == 0
    z = model.score(paths, user=u)
    assert not np.array_equal(z, model.score(paths)), "training changed nothing"
    f = tmp_path / f"{user}.safetensors"
    u.save(str(f))
    loaded = model.load_user(str(f))
    assert loaded.id == user
    assert np.array_equal(model.score(paths, user=loaded), z)
    cli = cli_scores(paths, "--model", data.generic, "--user", f)
    assert [np.float32(float(cli[p][0])) for p in paths] == list(z)


def test_personalise_is_the_command_lines_training(data, model, tmp_path):
    """k=None is --fit-all's user file and k=10 is repeat 0's row of results.csv, from the same draw."""
    user, paths, ratings = data.person()
    out = tmp_path / "run"
    run(BINARY, "personalise", "--model", data.generic, "--ratings", data.workers_csv, "--images", data.images,
        "--out", out, "--k", "10", "--users", user, "--repeats", "1", "--epochs", EPOCHS, "--fit-all",
        "--size", SIZE, "--device", "cpu", "--seed", "3", "--mode", "adapters")
    cli_user = model.load_user(str(out / "users" / f"{user}.safetensors"))
    fit = model.personalise(paths, ratings, epochs=EPOCHS, seed=3, user_id=user)
    assert np.array_equal(model.score(paths, user=fit), model.score(paths, user=cli_user))

    row = next(csv.DictReader(open(out / "results.csv")))
    u10 = model.personalise(paths, ratings, k=10, epochs=EPOCHS, seed=3, user_id=user)
    m = u10.metrics
    assert (m["n_train"], m["n_test"]) == (int(row["n_train"]), int(row["n_test"])) == (10, len(paths) - 10)
    for key in ("rho_generic", "rho_personal", "mse_generic", "mse_personal"):
        assert m[key] == pytest.approx(float(row[key]), rel=1e-8, abs=1e-12), key


def test_personalise_from_arrays_equals_the_same_photos_from_files(data, model, tmp_path):
    """Photos given as arrays train exactly as the files they came from: the same user file bytes
    and the same scores (on the CPU, same seed), for a list of arrays mixed with paths and for an
    N x H x W x 3 array; the temporary PNG files the arrays go through are removed."""
    user, paths, ratings = data.person()
    paths, ratings = paths[:16], ratings[:16]
    arrays = [aesthete.read_image(p) for p in paths]
    temporary = lambda: set(glob.glob(str(pathlib.Path(tempfile.gettempdir()) / "aesthete-personalise-*")))
    left_before = temporary()
    kw = dict(mode="adapters", epochs=2, seed=5, user_id=user)

    before = aesthete._input_copies()
    from_files = model.personalise(paths, ratings, **kw)
    assert aesthete._input_copies() == before
    mixed = list(arrays)
    mixed[3], mixed[10] = paths[3], pathlib.Path(paths[10])
    from_arrays = model.personalise(mixed, ratings, **kw)
    assert aesthete._input_copies() == before + 14  # each array photo is written once, as a PNG
    from_batch = model.personalise(np.stack(arrays), ratings, **kw)
    assert temporary() == left_before

    files = []
    for name, u in (("files", from_files), ("arrays", from_arrays), ("batch", from_batch)):
        files.append(tmp_path / f"{name}.safetensors")
        u.save(str(files[-1]))
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    z = model.score(paths, user=from_files)
    assert not np.array_equal(z, model.score(paths)), "training changed nothing"
    assert np.array_equal(model.score(np.stack(arrays), user=from_batch), z)

    # With k, the same draw: the same held-out metrics.
    a = model.personalise(paths, ratings, k=8, **kw).metrics
    b = model.personalise(arrays, ratings, k=8, **kw).metrics
    for key in ("n_train", "n_test", "rho_generic", "rho_personal", "mse_generic", "mse_personal", "train_loss"):
        assert np.array_equal(a[key], b[key], equal_nan=True), key  # train_loss[0] (before training) is NaN


def test_ratings_in_stars_are_converted_with_the_models_normalisation(data, model):
    user, paths, ratings = data.person()
    mean, std = model.norm
    a = model.personalise(paths[:12], ratings[:12], mode="head", epochs=1, user_id=user)
    b = model.personalise(paths[:12], [z * std + mean for z in ratings[:12]], rating_scale="stars", mode="head",
                          epochs=1, user_id=user)
    assert np.allclose(model.score(paths[:12], user=a), model.score(paths[:12], user=b), atol=1e-5)


def test_personalise_refuses_bad_arguments_with_the_engines_messages(data, model, tmp_path):
    user, paths, ratings = data.person()
    with pytest.raises(ValueError, match="images but"):
        model.personalise(paths, ratings[:-1])
    with pytest.raises(aesthete.ArgumentError, match=r"k 39 does not fit 40 ratings"):
        model.personalise(paths, ratings, k=39)
    with pytest.raises(ValueError, match="mode must be adapters, head or full"):
        model.personalise(paths, ratings, mode="lora")
    with pytest.raises(aesthete.ArgumentError, match="got one photo"):
        model.personalise(aesthete.read_image(paths[0]), ratings[:1])
    with pytest.raises(aesthete.ArgumentError, match="must be uint8"):
        model.personalise([np.zeros((8, 8, 3), dtype=np.float32)] * 2, ratings[:2])
    missing = str(tmp_path / "gone.png")
    with pytest.raises(aesthete.FileError, match="gone.png' does not exist") as e:
        model.personalise(paths[:5] + [missing], ratings[:6])
    assert isinstance(e.value, OSError) and isinstance(e.value, aesthete.Error)
