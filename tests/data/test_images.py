"""One image reader for training, evaluation, predict, int8 calibration and the served model:
EXIF orientation applied and 16-bit grey levels scaled the same way in all of them."""

import base64

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from deeplab.core.errors import BadSampleError
from deeplab.core.schema import ServeConfig
from deeplab.data.dataset import load_sample
from deeplab.data.images import read_rgb
from deeplab.data.palette import save_label_png
from deeplab.prepare.samples import check_image
from deeplab.serving.pyfunc_model import _as_images
from deeplab.serving.quantize import calibration_crops


def phone_photo(path):
    """A 60 x 40 (w x h) JPEG stored sideways with EXIF orientation 6: shown 40 wide, 60 high."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("make", ["exif", "16bit"])
def test_every_door_reads_the_same_upright_uint8_pixels(tmp_path, make):
    if make == "exif":
        path = phone_photo(tmp_path / "phone.jpg")
        with Image.open(path) as img:
            expected = np.array(ImageOps.exif_transpose(img).convert("RGB"))
        assert expected.shape == (60, 40, 3)  # upright: the stored image is 60 wide
    else:
        path = tmp_path / "deep.png"
        ramp = np.linspace(0, 65535, 40 * 30).astype(np.uint16).reshape(30, 40)
        Image.fromarray(ramp).save(path)
        expected = np.repeat(np.round(ramp / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    h, w = expected.shape[:2]
    mask = tmp_path / "mask.png"
    save_label_png(mask, np.zeros((h, w), np.uint8))
    assert check_image(path) == (w, h)  # preprocess: masks are checked against the upright size
    image, _ = load_sample(str(path), str(mask))  # training and evaluation
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(read_rgb(path), expected)  # predict
    served, _ = _as_images(pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode()]}),
                           ServeConfig(), "labels")  # the served model
    assert np.array_equal(served[0], expected)
    pd.DataFrame({"image": [str(path)]}).to_csv(tmp_path / "list.csv", index=False)
    crop = calibration_crops(tmp_path / "list.csv", 1, 10**4, 0)[0][0]  # int8 calibration:
    s = crop.shape[0]  # a square crop of the upright image
    assert s == min(h, w) and any(np.array_equal(crop, expected[y:y + s, x:x + s])
                                  for y in range(h - s + 1) for x in range(w - s + 1))


def test_a_mask_drawn_on_the_stored_view_of_a_rotated_photo_is_refused(tmp_path):
    path = phone_photo(tmp_path / "phone.jpg")
    save_label_png(tmp_path / "sideways.png", np.zeros((40, 60), np.uint8))
    with pytest.raises(BadSampleError, match=r"sideways.png: mask size \(40, 60\) differs from its "
                                             r"image \(60, 40\)"):
        load_sample(str(path), str(tmp_path / "sideways.png"))
