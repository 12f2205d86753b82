"""The deployable Segmenter and the one loader for files, registry URIs and programs."""

import numpy as np
import pytest
import torch
from helpers.models import metrics_file, reference_labels, register_params, tiny_net

from deeplab.core.errors import DeeplabError
from deeplab.model.inference import InferenceStrategy
from deeplab.serving.export import export_program
from deeplab.serving.segmenter import Segmenter, load_segmenter

PARAMS = register_params()


def test_segmenter_takes_uint8_hwc_of_any_size():
    net = tiny_net()
    seg = Segmenter(net)
    rng = np.random.default_rng(0)
    for h, w in [(65, 65), (51, 77)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = seg(torch.from_numpy(image))
        assert out.shape == (h, w) and out.dtype == torch.uint8
        assert np.array_equal(out.numpy(), reference_labels(net, image))
    batch = seg(torch.from_numpy(rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)))
    assert batch.shape == (2, 40, 50)
    with pytest.raises(ValueError, match="uint8"):
        seg(torch.zeros(1, 40, 40, 3))
    with pytest.raises(ValueError, match="N x H x W x 3"):
        seg(torch.zeros(1, 3, 40, 40, dtype=torch.uint8))


@pytest.mark.slow
def test_one_loader_for_files_registry_uris_and_programs(tmp_path, model_file, tracking):
    """load_segmenter gives the same labels from the model file, its registered version (with
    the strategy it was registered with) and its exported program."""
    from deeplab.serving.registry import register

    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (1, 50, 70, 3), dtype=np.uint8))
    strategy = InferenceStrategy(output_stride=8, flip=True)
    params = PARAMS.replace(registration=PARAMS.registration.replace(
        inference=PARAMS.registration.inference.replace(output_stride=8, flip=True)))
    register(model_file, metrics_file(tracking, 0.5), params)
    from_file = load_segmenter(model_file, strategy)
    from_registry = load_segmenter("models:/seg@champion")
    assert from_registry.strategy == from_file.strategy == strategy
    export_program(from_file, tmp_path / "m.pt2", example_size=65, max_size=256)
    program = load_segmenter(tmp_path / "m.pt2")
    with torch.no_grad():
        assert torch.equal(from_file(x), from_registry(x)) and torch.equal(from_file(x), program(x))
    assert load_segmenter("models:/seg@champion", flip=False).strategy.flip is False  # an override
    with pytest.raises(DeeplabError, match="fixed inference strategy"):
        load_segmenter(tmp_path / "m.pt2", scales=(0.5, 1.0))
