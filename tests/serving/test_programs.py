"""Exported programs (.pt2): crafted ones refused before anything in them runs, plain ones load."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import (
    Evil,
    tiny_net,
)
from PIL import Image

from deeplab.core.errors import (
    UnsafeFileError,
)
from deeplab.serving.export import export_program
from deeplab.serving.predict import main as predict_main
from deeplab.serving.segmenter import Segmenter, load_segmenter


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("program") / "m.pt2"
    export_program(Segmenter(tiny_net()), path, example_size=33, max_size=128)
    return path


def rewrite_zip(src: Path, dst: Path, change) -> None:
    """Copy a zip archive, letting `change(name, data)` return new bytes (or None: drop)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)


def _pickled_constant(program: Path, out: Path, marker: Path) -> Path:
    import io

    buffer = io.BytesIO()
    torch.save(Evil(marker), buffer)
    config_name = next(n for n in zipfile.ZipFile(program).namelist()
                       if n.endswith("model_constants_config.json"))
    config = json.loads(zipfile.ZipFile(program).read(config_name))
    key, entry = next(iter(config["config"].items()))
    entry["use_pickle"] = True
    target = entry["path_name"]

    def change(name, data):
        if name == config_name:
            return json.dumps(config).encode()
        if name.endswith(f"data/constants/{target}"):
            return buffer.getvalue()
        return data

    rewrite_zip(program, out, change)
    return out



@pytest.mark.slow
def test_crafted_program_with_a_pickled_constant_runs_nothing(tmp_path, program, capsys):
    marker = tmp_path / "pwned"
    evil = _pickled_constant(program, tmp_path / "evil.pt2", marker)
    with pytest.raises(UnsafeFileError, match="stored pickled"):
        load_segmenter(evil)
    assert not marker.exists()
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(images / "a.png")
    assert predict_main(["--model", str(evil), "--input", str(images),
                         "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "evil.pt2" in err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()
    # Even if the check were bypassed, torch's loader runs with weights-only loading forced on.
    from deeplab.serving.programs import _weights_only_loads

    with _weights_only_loads(), pytest.raises(Exception):
        torch.export.load(str(evil))
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("member", ["data/aotinductor/model/model.so", "data/constants/custom_obj_0",
                                    "data/weights/model.pt", "../escape"])
def test_programs_with_members_a_plain_export_lacks_are_refused(tmp_path, program, member):
    top = zipfile.ZipFile(program).namelist()[0].split("/")[0]
    out = tmp_path / "odd.pt2"
    with zipfile.ZipFile(program) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr(f"{top}/{member}", b"\x80\x02payload")
    with pytest.raises(UnsafeFileError, match="refused"):
        load_segmenter(out)


@pytest.mark.slow
def test_crafted_example_inputs_are_refused(tmp_path, program):
    import io

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(Evil(marker), buffer)
    out = tmp_path / "evil.pt2"
    rewrite_zip(program, out, lambda name, data: buffer.getvalue()
                if "data/sample_inputs/" in name else data)
    with pytest.raises(UnsafeFileError, match="example inputs"):
        load_segmenter(out)
    assert not marker.exists()


@pytest.mark.slow
def test_a_plain_program_still_loads(program):
    x = torch.randint(0, 256, (1, 37, 41, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(load_segmenter(program)(x), Segmenter(tiny_net())(x))
