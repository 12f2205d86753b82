"""The predict command: mixed folders, never overwriting, odd images, options, full disks."""

import numpy as np
import pytest
from helpers.models import image_folder, reference_labels, tiny_net
from PIL import Image

from deeplab.data.images import read_rgb
from deeplab.data.palette import read_label_png
from deeplab.model.files import save_model
from deeplab.serving.predict import main as predict_main


def test_predict_command_on_mixed_folder(tmp_path, model_file, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(inputs / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (41, 33, 3), dtype=np.uint8)).save(inputs / "b.png")
    Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8)).save(inputs / "gray.png")
    (inputs / "notes.txt").write_text("not an image, ignored")
    assert predict_main(["--model", str(model_file), "--input", str(inputs),
                         "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    for name, size in [("a.jpg", (70, 90)), ("b.png", (41, 33)), ("gray.png", (50, 60))]:
        label = read_label_png(tmp_path / "out" / f"{name}.labels.png")
        assert label.shape == size
        assert Image.open(tmp_path / "out" / f"{name}.overlay.jpg").size == size[::-1]
    net = tiny_net()
    image = np.array(Image.open(inputs / "a.jpg").convert("RGB"))
    assert np.array_equal(read_label_png(tmp_path / "out" / "a.jpg.labels.png"),
                          reference_labels(net, image))

    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code = predict_main(["--model", str(model_file), "--input", str(inputs),
                         "--output", str(tmp_path / "out2"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "broken.jpg: not a readable image" in err
    assert (tmp_path / "out2" / "a.jpg.labels.png").is_file()  # the readable ones are still done
    assert predict_main(["--model", str(tmp_path / "nope.pt"), "--input", str(inputs),
                         "--output", str(tmp_path / "o3")]) == 2
    assert "nope.pt: model file not found" in capsys.readouterr().err


def test_predict_never_overwrites_inputs_or_its_own_results(tmp_path, model_file, capsys):
    model = model_file
    folder = image_folder(tmp_path / "photos", {"a.jpg": (40, 50), "a.png": (30, 30)})
    photo = (folder / "a.png").read_bytes()

    out = tmp_path / "out"
    assert predict_main(["--model", str(model), "--input", str(folder), "--output", str(out),
                         "--device", "cpu"]) == 0
    assert "2 of 2" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a.jpg.labels.png", "a.jpg.overlay.jpg", "a.png.labels.png", "a.png.overlay.jpg"]
    # Into the input folder itself: a.png (a photo) stays, results sit beside it, and they
    # are not taken as inputs by the next run.
    for _ in range(2):
        assert predict_main(["--model", str(model), "--input", str(folder), "--output",
                             str(folder), "--device", "cpu"]) == 0
        assert "2 of 2" in capsys.readouterr().out
        assert (folder / "a.png").read_bytes() == photo and len(list(folder.iterdir())) == 6


def test_predict_refuses_outputs_that_reach_an_input(tmp_path, model_file, capsys):
    model = model_file
    folder = image_folder(tmp_path / "p", {"a.jpg": (30, 30), "b.png": (30, 30)})
    photo = (folder / "b.png").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg.labels.png").symlink_to(folder / "b.png")  # writing it would clobber b.png
    code = predict_main(["--model", str(model), "--input", str(folder), "--output", str(out),
                         "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "would overwrite an input image" in err[0]
    assert (folder / "b.png").read_bytes() == photo and not (out / "a.jpg.overlay.jpg").exists()
    code = predict_main(["--model", str(model), "--input", str(folder / "a.jpg"),
                         "--output", str(folder / "b.png"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "exists and is not a folder" in err[0]
    assert (folder / "b.png").read_bytes() == photo


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(32, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 64, 3)
    assert rgb.min() == 0 and rgb.max() == 255
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert len(np.unique(rgb)) > 200  # not saturated at 255 from the second pixel on


def test_decompression_bomb_is_named_and_skipped(tmp_path, model_file, capsys, monkeypatch):
    model = model_file
    folder = image_folder(tmp_path / "in", {"ok.png": (30, 30)})
    Image.new("1", (3000, 3000)).save(folder / "bomb.png")  # 9 Mpx, a few kB on disk
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # bomb = over 2x this
    code = predict_main(["--model", str(model), "--input", str(folder), "--output",
                         str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "bomb.png: skipped, too many pixels" in err and "Traceback" not in err
    assert (tmp_path / "out" / "ok.png.labels.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--scales", "0"], "--scales[0]: Input should be greater than or equal to 0.1"),
    (["--scales", "-1"], "--scales[0]: Input should be greater than or equal to 0.1"),
    (["--scales", "1e-9"], "--scales[0]: Input should be greater than or equal to 0.1"),
    (["--scales", "nan"], "--scales[0]: Input should be a finite number"),
    (["--scales", "1000"], "--scales[0]: Input should be less than or equal to 4"),
    (["--scales", "1", "1"], "--scales: expected a list without duplicates"),
])
def test_predict_options_follow_the_params_schema(tmp_path, capsys, args, message):
    save_model(tmp_path / "m.pt", tiny_net())
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    code = predict_main(["--model", str(tmp_path / "m.pt"), "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_predict_onto_a_full_disk_is_one_line_and_written_results_are_whole(tmp_path, full_disk,
                                                                          capsys):
    save_model(tmp_path / "m.pt", tiny_net())
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(images / f"{k:02d}.png")
    filler = full_disk / "filler"
    filler.write_bytes(b"\0" * (200 * 1024))  # leave room for a few results only
    code = predict_main(["--model", str(tmp_path / "m.pt"), "--input", str(images),
                         "--output", str(full_disk / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "no space left on device" in err[0], err
    assert str(full_disk / "out") in err[0]
    written = sorted((full_disk / "out").iterdir())
    assert not [p for p in written if p.name.startswith(".")]  # no temporary files left
    for path in written:  # every result that exists is whole
        with Image.open(path) as img:
            img.load()


LARGE = """
import resource, sys
from deeplab.serving.predict import main
status = main(sys.argv[1:])
print("peak_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(status)
"""


@pytest.mark.slow
def test_a_large_photo_is_tiled_by_default_in_bounded_memory(tmp_path, model_file):
    """A 4000 x 3000 photo (above the 4,000,000-pixel limit): windows by default, peak RSS of
    the whole process far below what the whole image takes, labels of its full size."""
    import subprocess
    import sys

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(np.tile(small, (10, 10, 1))).save(inputs / "big.jpg", quality=85)

    def peak(*extra):
        out = subprocess.run([sys.executable, "-c", LARGE, "--model", str(model_file), "--input",
                              str(inputs / "big.jpg"), "--output", str(tmp_path / "out"),
                              "--device", "cpu", *extra], capture_output=True, text=True, timeout=3600)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split("peak_rss_mib")[1])

    tiled = peak()
    assert read_label_png(tmp_path / "out/big.jpg.labels.png").shape == (3000, 4000)
    whole = peak("--tile", "5000")  # one window: the whole image at once
    assert tiled < 2048 and tiled < whole / 2, (tiled, whole)  # 1.8 GiB seen beside other tests


def test_a_failing_image_is_one_line_and_the_others_still_run(tmp_path, model_file, capsys,
                                                              monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(inputs / name)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    from deeplab.serving import runtimes

    real = runtimes.TorchRunner.labels

    def labels(self, images):
        if images.shape[1] == 40 and images[0, 0, 0, 0] == first:  # b.png: the machine runs out
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 13304626176 bytes")
        return real(self, images)

    first = np.array(Image.open(inputs / "b.png"))[0, 0, 0]
    monkeypatch.setattr(runtimes.TorchRunner, "labels", labels)
    status = predict_main(["--model", str(model_file), "--input", str(inputs), "--output",
                           str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert "error: 2 of 4 image(s) failed:" in err
    assert f"{inputs / 'b.png'}: out of memory (RuntimeError); try a smaller --tile" in err
    assert f"{inputs / 'broken.jpg'}: not a readable image" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.labels.png")) == [
        "a.png.labels.png", "c.png.labels.png"]


def test_read_only_and_immutable_outputs_are_one_line(tmp_path, model_file, capsys, small_disk):
    import subprocess

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(inputs / "a.png")
    read_only = small_disk(64, read_only=True)
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    can_chattr = subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0
    try:
        targets = [(read_only / "out", "read-only file system")]
        if can_chattr:  # tmp_path's filesystem supports the immutable flag
            targets.append((immutable / "out", "operation not permitted"))
        for target, reason in targets:
            status = predict_main(["--model", str(model_file), "--input", str(inputs),
                                   "--output", str(target), "--device", "cpu"])
            err = capsys.readouterr().err
            assert status == 2 and err.count("\n") == 1, err
            assert err.startswith(f"error: {target}") and reason in err and "Traceback" not in err
    finally:
        if can_chattr:
            subprocess.run(["chattr", "-i", str(immutable)], check=False)
