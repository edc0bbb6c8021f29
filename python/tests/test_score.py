"""aesthete.Model.score against `aesthete score`, arrays against files, stars, users, threads."""
import struct
import threading
import zlib

import numpy as np
import pytest

import aesthete
from conftest import BINARY, cli_scores, run


def write_png(path, rgb):
    """A minimal 8-bit RGB PNG writer (no aesthete code involved), for array-versus-file checks."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_scores_equal_the_command_line_bit_for_bit(data, model):
    paths = data.photos(21)  # batches of 16 and 5, as the command line makes them
    z = model.score(paths)
    assert z.dtype == np.float32 and z.shape == (21,)
    cli = cli_scores(paths, "--model", data.generic)
    for p, v in zip(paths, z):
        text, stars = cli[p]
        assert np.float32(float(text)) == v, (p, text, repr(v))  # the CSV holds the float exactly
        assert abs(float(stars) - model.stars(float(v))) <= 0.5e-4
    # One photo alone is a batch of one, on both sides. (Its z can differ from its z within a batch
    # of 16 in the last bits: the CPU convolutions' summation depends on the batch size.)
    alone = model.score(paths[3])
    assert isinstance(alone, float)
    assert np.float32(float(cli_scores([paths[3]], "--model", data.generic)[paths[3]][0])) == alone


def test_real_photos_score_as_on_the_command_line(data, model, real_photos):
    z = model.score(real_photos)
    cli = cli_scores(real_photos, "--model", data.generic)
    assert [np.float32(float(cli[p][0])) for p in real_photos] == list(z)
    assert len(set(z.tolist())) == len(real_photos)  # different photos, different scores


def test_an_array_scores_as_the_same_image_from_a_file(model, tmp_path):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(45, 61, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(aesthete.read_image(tmp_path / "x.png"), rgb)
    assert model.score(rgb) == model.score(str(tmp_path / "x.png"))
    # A batch, a non-contiguous view (copied) and a list of paths agree photo by photo.
    batch = rng.integers(0, 256, size=(3, 45, 61, 3), dtype=np.uint8)
    for i in range(3):
        write_png(tmp_path / f"b{i}.png", batch[i])
    zb = model.score(batch)
    assert np.array_equal(zb, model.score([str(tmp_path / f"b{i}.png") for i in range(3)]))
    flipped = batch[:, :, ::-1]
    assert not flipped.flags.c_contiguous
    assert np.array_equal(model.score(flipped), model.score(np.ascontiguousarray(flipped)))
    assert not np.array_equal(model.score(flipped), zb)


def test_c_contiguous_arrays_are_read_in_place_and_other_layouts_copied(model, tmp_path):
    """aesthete._input_copies() counts the photo arrays the module copied: it compares the pixels the
    engine reads with the caller's (photo_array), so a contiguous array that got copied fails here."""
    rng = np.random.default_rng(11)
    batch = rng.integers(0, 256, size=(3, 40, 52, 3), dtype=np.uint8)
    frozen = batch.copy()
    frozen.flags.writeable = False  # read-only memory is read in place too
    before = aesthete._input_copies()
    z = model.score(batch)
    assert np.array_equal(model.score(frozen), z)
    assert model.score(batch[1]) == model.score([batch[1]])[0]
    assert np.array_equal(model.score([batch[0], batch[1], batch[2]]), z)
    assert aesthete._input_copies() == before, "a C-contiguous uint8 array was copied"
    # Other layouts are converted (one copy per array) and score as their contiguous copies.
    for strided in (batch[:, :, ::-1], batch[:, ::2], np.asfortranarray(batch[0]), batch.transpose(0, 2, 1, 3)):
        assert not strided.flags.c_contiguous
        n = aesthete._input_copies()
        assert np.array_equal(np.atleast_1d(model.score(strided)), np.atleast_1d(model.score(np.ascontiguousarray(strided))))
        assert aesthete._input_copies() == n + 1
    # Calls that work on a copy of the photo say so: one copy each.
    n = aesthete._input_copies()
    model.saliency(batch[0], smoothgrad=1, full_size=False)
    assert aesthete._input_copies() == n + 1
    # A list mixes paths and arrays, in order, in one batch as the command line batches files.
    write_png(tmp_path / "b1.png", batch[1])
    assert np.array_equal(model.score([batch[0], str(tmp_path / "b1.png"), batch[2]]), z)


def test_stars_are_the_command_lines_mapping_clamped():
    assert aesthete.stars(0.0) == pytest.approx(3.0183403576)
    assert aesthete.stars(1.0) == pytest.approx(3.0183403576 + 1.1001719588)
    assert aesthete.stars(-10.0) == 1.0 and aesthete.stars(10.0) == 5.0
    s = aesthete.stars(np.array([-10.0, 0.0, 10.0], dtype=np.float32))
    assert s.shape == (3,) and s[0] == 1.0 and s[2] == 5.0


def test_threads_scoring_one_model_get_the_sequential_results(data, model):
    # Half of the threads score for a person, half for the generic model: the binding of the one
    # backbone changes between calls, so unserialised calls would mix them up.
    user, paths, ratings = data.person()
    u = model.personalise(paths[:12], ratings[:12], k=None, mode="head", epochs=1, user_id=user)
    photos = data.photos(12)
    expected = {None: model.score(photos), "u": model.score(photos, user=u)}
    assert not np.array_equal(expected[None], expected["u"])
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = model.score(photos, user=u if i % 2 else None)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(6):
        assert np.array_equal(results[i], expected["u" if i % 2 else None]), i


def test_the_binary_under_test_is_this_builds(data):
    assert BINARY.exists()
    assert "aesthete" in run(BINARY, "--version").stdout


def test_bf16_activations_score_close_to_f32_and_as_on_the_command_line(data, model):
    paths = data.photos(5)
    z32 = model.score(paths)
    with pytest.raises(aesthete.ArgumentError, match="set_activations 'fp16': the activation storage must be f32 or bf16"):
        aesthete.set_activations("fp16")
    assert aesthete.activations() == "f32"
    aesthete.set_activations("bf16")
    try:
        assert aesthete.activations() == "bf16"
        bf = aesthete.load(data.generic, device="cpu")
        z16 = bf.score(paths)
    finally:
        aesthete.set_activations("f32")
    assert np.array_equal(model.score(paths), z32)  # a model loaded before keeps its f32 storage
    assert not np.array_equal(z16, z32)
    assert np.max(np.abs(z16 - z32)) < 0.05 * np.max(np.abs(z32)) + 0.01
    cli = cli_scores(paths, "--model", data.generic, global_args=["--activations", "bf16"])
    assert [np.float32(float(cli[p][0])) for p in paths] == list(z16)
