"""Atomic writes: stale temporaries of killed runs, umask permissions, full disks."""

import os
import stat

import pytest

from deeplab.core.errors import (
    DiskFullError,
)
from deeplab.core.io import atomic_dir, remove_stale_temps, write_json
from deeplab.engine.checkpoints import load_checkpoint
from deeplab.model import DeepLabV3Plus
from deeplab.model.files import save_model


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, dead_pid):
    ckpt = tmp_path / "checkpoints" / "pretrain.ckpt"
    ckpt.parent.mkdir()
    stale_file = ckpt.parent / f".pretrain.ckpt.{dead_pid}-x1y2.tmp"
    live_file = ckpt.parent / f".pretrain.ckpt.{os.getpid()}-a1b2.tmp"  # a run still going on
    stale_file.write_bytes(b"half")
    live_file.write_bytes(b"half")
    assert load_checkpoint(ckpt, "key", 10) is None
    assert not stale_file.exists() and live_file.exists()

    processed = tmp_path / "processed"
    stale_dir = tmp_path / f".processed.{dead_pid}-q9.tmp"
    (stale_dir / "masks").mkdir(parents=True)
    with atomic_dir(processed) as tmp:
        (tmp / "ok").write_text("1")
    assert not stale_dir.exists() and (processed / "ok").is_file()
    assert remove_stale_temps(processed) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"miou": 1})
        with atomic_dir(tmp_path / "processed") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "processed").stat().st_mode) == 0o755


def test_a_checkpoint_or_model_file_on_a_full_disk_is_named_and_leaves_nothing(full_disk):
    from deeplab.core.io import save_torch

    big = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=64, decoder_channels=64)
    with pytest.raises(DiskFullError, match=r"model\.pt: no space left on device"):
        save_model(full_disk / "model.pt", big)
    with pytest.raises(DiskFullError, match=r"run\.ckpt: no space left on device"):
        save_torch(full_disk / "run.ckpt", {"model": big.state_dict()})
    assert list(full_disk.iterdir()) == []
