"""Registered models are verified against their sha256 and strategy schema on every load."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers.models import (
    register_params,
    tiny_net,
)

from deeplab.core.errors import (
    ModelFileError,
)
from deeplab.model.files import save_model
from deeplab.serving.segmenter import load_segmenter


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A model registered as `seg` version 1 in a SQLite store under tmp_path; yields the
    folder of its logged artifacts."""
    import mlflow

    from deeplab.serving.registry import register

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    save_model(tmp_path / "finetune.pt", tiny_net(), stage="finetune")
    (tmp_path / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    register(tmp_path / "finetune.pt", tmp_path / "metrics.json", REGISTER)
    mlmodel = next((tmp_path / "mlartifacts").rglob("MLmodel"))
    yield mlmodel.parent
    mlflow.set_tracking_uri(None)


def _artifact(model_dir: Path, name: str) -> Path:
    artifacts = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]["artifacts"]
    return model_dir / artifacts[name]["path"]


REGISTER = register_params()



def test_weights_changed_after_registration_are_refused(registered, tmp_path):
    assert load_segmenter("models:/seg@champion") is not None  # untouched: loads
    weights = _artifact(registered, "model_file")
    state = torch.load(weights, weights_only=True)
    state["state_dict"] = {k: torch.zeros_like(v) for k, v in state["state_dict"].items()}
    torch.save(state, weights)
    for uri in ("models:/seg@champion", "models:/seg/1"):
        with pytest.raises(ModelFileError, match=rf"{uri}: its weights or strategy differ"):
            load_segmenter(uri)
    # The pyfunc model checks the same, against the digest in its own metadata.
    import mlflow.pyfunc

    with pytest.raises(Exception, match="differ from what was registered"):
        mlflow.pyfunc.load_model("models:/seg@champion")


def test_registry_digest_is_checked_even_if_the_metadata_was_rewritten_too(registered):
    """A tamperer who also rewrites MLmodel's metadata is caught by the registry's tag."""
    from deeplab.model.files import state_digest

    weights = _artifact(registered, "model_file")
    state = torch.load(weights, weights_only=True)
    state["state_dict"] = {k: v + 1 for k, v in state["state_dict"].items()}
    torch.save(state, weights)
    mlmodel = yaml.safe_load((registered / "MLmodel").read_text())
    strategy = json.loads(_artifact(registered, "strategy").read_text())
    mlmodel["metadata"]["model_sha256"] = state_digest(state, strategy)
    (registered / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ModelFileError, match="models:/seg@champion: its weights or strategy differ"):
        load_segmenter("models:/seg@champion")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be a mapping"),
    ("{not json", "not readable JSON"),
    ('{"output_stride": 16, "scales": "abc", "flip": false}', "scales"),
    ('{"output_stride": 16, "scales": [], "flip": false}', "scales: List should have at least 1 item"),
    ('{"output_stride": 7, "scales": [1.0], "flip": false}', "output_stride: Input should be 8, 16 or 32"),
])
def test_a_tampered_strategy_file_is_one_clear_error(registered, text, message):
    _artifact(registered, "strategy").write_text(text)
    with pytest.raises(ModelFileError) as info:
        load_segmenter("models:/seg@champion")
    assert str(info.value).startswith("models:/seg@champion: its strategy.json")
    assert message in str(info.value) and "\n" not in str(info.value)
