"""Model files run no code when loaded."""


import pytest
import torch
from helpers.models import (
    Evil,
    image_folder,
)

from deeplab.core.errors import (
    UnsafeFileError,
)
from deeplab.engine.checkpoints import load_checkpoint
from deeplab.model.files import read_model_file
from deeplab.serving.predict import main as predict_main


def test_crafted_model_file_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": Evil(marker)}, evil)
    inputs = image_folder(tmp_path / "in", {"x.png": (40, 40)})

    code = predict_main(["--model", str(evil), "--input", str(inputs), "--output",
                         str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(evil) in err[0] and "refused" in err[0]
    for load in (read_model_file,):  # evaluate, register and finetune's init read through it
        with pytest.raises(UnsafeFileError, match="refused"):
            load(evil)
    with pytest.raises(UnsafeFileError, match="delete it to train from scratch"):
        load_checkpoint(evil, "any", 10)  # a crafted resume checkpoint
    assert not marker.exists()


