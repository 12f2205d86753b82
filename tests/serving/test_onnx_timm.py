"""ONNX exports of DeepLabV3+ on timm encoders (one per family of docs/model.md's table, at
output stride 16 and 8 alternately): ONNX Runtime equals PyTorch on an image of another size
than the export's example."""

import numpy as np
import pytest
import torch
from helpers.data import CRACKS

from deeplab.model import DeepLabV3Plus
from deeplab.prepare.layouts import resolve_classes
from deeplab.serving.onnx_files import export_onnx
from deeplab.serving.runtimes import OnnxRuntimeRunner
from deeplab.serving.segmenter import Segmenter

# Each family's smallest model (tests/model/test_timm_encoders.py: strides at 16 and 8). TF's
# 'same' padding (tf_efficientnet_*) exports too, but its traced padding takes minutes.
EXPORTS = [("resnest14d", 16), ("efficientnet_b0", 8), ("mobilenetv3_small_050", 16),
           ("regnetx_002", 8), ("convnext_atto", 16)]


@pytest.mark.slow
@pytest.mark.parametrize("arch, output_stride", EXPORTS)
def test_onnx_of_a_timm_encoder_equals_pytorch(tmp_path, arch, output_stride):
    torch.manual_seed(0)
    net = DeepLabV3Plus(3, f"timm:{arch}", output_stride, aspp_channels=16, decoder_channels=16)
    for m in net.modules():  # trained-looking BN statistics, so the outputs are not flat
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    seg = Segmenter(net.eval(), classes=resolve_classes("folder", CRACKS, None, 255)).eval()
    path = tmp_path / "m.onnx"
    export_onnx(seg, path, probabilities=True)
    images = np.random.default_rng(0).integers(0, 256, (2, 75, 118, 3), dtype=np.uint8)
    with torch.no_grad():
        want = seg.probabilities(torch.from_numpy(images)).numpy()
    runner = OnnxRuntimeRunner(path, "fp32", threads=1)
    probs = runner.probs(images)
    assert probs.shape == want.shape
    np.testing.assert_allclose(probs, want, atol=1e-4, rtol=0)
    assert (runner.labels(images) == want.argmax(1)).mean() >= 0.999
