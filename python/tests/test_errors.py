"""Errors are Python exceptions of the right type carrying the engine's message."""
import numpy as np
import pytest

import aesthete


def test_exception_classes():
    assert issubclass(aesthete.ArgumentError, aesthete.Error) and issubclass(aesthete.ArgumentError, ValueError)
    assert issubclass(aesthete.FileError, aesthete.Error) and issubclass(aesthete.FileError, OSError)


def test_missing_and_corrupt_model_files_are_file_errors(tmp_path):
    with pytest.raises(aesthete.FileError, match="nothere.safetensors") as e:
        aesthete.load(tmp_path / "nothere.safetensors")
    assert isinstance(e.value, OSError)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x07" * 64)
    with pytest.raises(OSError, match="neither a safetensors checkpoint nor a PyTorch zip checkpoint"):
        aesthete.load(bad)


def test_bad_arguments_are_value_errors(data):
    with pytest.raises(ValueError, match="unknown device 'tpu'|tpu"):
        aesthete.load(data.generic, device="tpu")
    with pytest.raises(aesthete.ArgumentError, match=r"size= must be native or a side in 32..4096, got '7'"):
        aesthete.load(data.generic, size=7)
    with pytest.raises(ValueError, match="debug, info, warn, error or quiet"):
        aesthete.set_log_level("loud")


def test_photo_arguments(model, data, tmp_path):
    with pytest.raises(ValueError, match="must be uint8"):
        model.score(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        model.score(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(aesthete.FileError, match="gone.jpg"):
        model.score(str(tmp_path / "gone.jpg"))
    text = tmp_path / "notes.png"
    text.write_text("not a photo")
    with pytest.raises(aesthete.FileError, match="not a JPEG or PNG file"):
        model.score([str(text)])
    with pytest.raises(ValueError, match="is a folder"):
        model.score(str(tmp_path))


def test_user_files(model, data):
    with pytest.raises(aesthete.FileError, match="is a 'model' file, not a user file"):
        model.load_user(str(data.generic))


def test_a_user_of_another_generic_model_is_refused(model, data, tmp_path):
    other = aesthete.load(data.other, device="cpu")
    user, paths, ratings = data.person()
    f = tmp_path / "u.safetensors"
    other.personalise(paths[:8], ratings[:8], mode="head", epochs=1, user_id=user).save(str(f))
    with pytest.raises(aesthete.ArgumentError, match="was trained on generic model sha256:"):
        model.load_user(str(f))


def test_conv_math_without_cuda():
    if aesthete.cuda_unusable_reason().startswith("this build has no CUDA backend"):
        with pytest.raises(ValueError, match="no CUDA backend"):
            aesthete.set_conv_math("tf32")
        assert aesthete.conv_math() == "f32"
    else:
        pytest.skip("a CUDA build: conv math is tested by the GPU tests")
