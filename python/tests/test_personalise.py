"""Model.personalise: the same training as `aesthete personalise`, save -> load -> score round trip."""
import csv

import numpy as np
import pytest

import aesthete
from conftest import BINARY, SIZE, cli_scores, run

EPOCHS = 2


def test_personalise_save_load_score_round_trip(data, model, tmp_path):
    user, paths, ratings = data.person()
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
    missing = str(tmp_path / "gone.png")
    with pytest.raises(aesthete.FileError, match="gone.png' does not exist") as e:
        model.personalise(paths[:5] + [missing], ratings[:6])
    assert isinstance(e.value, OSError) and isinstance(e.value, aesthete.Error)
