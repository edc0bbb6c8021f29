"""Model.enhance and Model.saliency: shapes, recipes, agreement with the command line."""
import numpy as np
import pytest

import aesthete
from conftest import BINARY, SIZE, run

RECIPE_KEYS = {"format", "version", "exposure_stops", "contrast", "saturation", "temperature", "tint", "tone_curve",
               "epsilon", "score_before", "score_after", "accepted_steps", "mode"}


def test_enhance_global_returns_the_photo_and_its_recipe(data, model, tmp_path):
    photo = data.photos(1)[0]
    original = aesthete.read_image(photo)
    img, recipe = model.enhance(photo, mode="global", steps=4)
    assert img.dtype == np.uint8 and img.shape == original.shape and img.flags.owndata
    assert RECIPE_KEYS <= set(recipe), set(recipe)
    assert recipe["mode"] == "global" and len(recipe["tone_curve"]) == 4
    assert recipe["score_after"] >= recipe["score_before"]
    assert model.score(img) == np.float32(recipe["score_after"])  # the score of the returned pixels
    assert np.array_equal(aesthete.apply_recipe(original, recipe), img)
    # The command line makes the same edit.
    out = tmp_path / "out.png"
    run(BINARY, "enhance", "--model", data.generic, "--input", photo, "--output", out, "--steps", "4",
        "--device", "cpu")
    assert np.array_equal(aesthete.read_image(out), img)


def test_enhance_pixels_stays_within_its_budget(data, model):
    photo = aesthete.read_image(data.photos(2)[1])
    img, recipe = model.enhance(photo, mode="pixels", epsilon=4 / 255, steps=3)
    assert img.shape == photo.shape
    assert {"mode", "epsilon", "max_change", "score_before", "score_after", "accepted_steps"} <= set(recipe)
    assert recipe["max_change"] <= 4 / 255 + 1e-6
    assert np.abs(img.astype(int) - photo.astype(int)).max() <= 5  # 4/255 plus rounding


def test_saliency_maps_have_the_photos_or_the_networks_shape(data, model):
    photo = aesthete.read_image(data.photos(1)[0])
    s = model.saliency(photo, smoothgrad=2)
    assert s.dtype == np.float32 and s.shape == photo.shape[:2]
    assert np.isfinite(s).all() and (s >= 0).all() and s.max() > 0
    small = model.saliency(photo, smoothgrad=2, full_size=False)
    assert small.shape == (SIZE, SIZE)
    assert np.array_equal(small, model.saliency(photo, smoothgrad=2, full_size=False))  # seeded


def test_saliency_versus_generic_needs_a_user(data, model):
    with pytest.raises(ValueError, match="versus_generic"):
        model.saliency(data.photos(1)[0], versus_generic=True)


def test_users_belong_to_their_model(data, model):
    user, paths, ratings = data.person()
    u = model.personalise(paths[:8], ratings[:8], mode="head", epochs=1, user_id=user)
    other = aesthete.load(data.generic, device="cpu")
    with pytest.raises(aesthete.ArgumentError, match="belongs to another Model"):
        other.score(paths[0], user=u)
