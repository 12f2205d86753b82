"""torch.export programs give the labels PyTorch gives."""

import numpy as np
import pytest
import torch
from helpers.models import tiny_net

from deeplab.model.inference import InferenceStrategy
from deeplab.serving.export import export_program
from deeplab.serving.segmenter import Segmenter


@pytest.mark.slow
def test_exported_program_matches_pytorch(tmp_path):
    seg = Segmenter(tiny_net(), InferenceStrategy(output_stride=8, flip=True))
    export_program(seg, tmp_path / "m.pt2", example_size=65, max_size=512)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    rng = np.random.default_rng(1)
    for shape in [(1, 65, 65, 3), (2, 57, 91, 3)]:
        x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
        with torch.no_grad():
            assert torch.equal(program(x), seg(x))
    with pytest.raises(ValueError, match="single-scale"):
        export_program(Segmenter(tiny_net(), InferenceStrategy(scales=(0.5, 1.0))), tmp_path / "ms.pt2")
    assert not (tmp_path / "ms.pt2").exists()
