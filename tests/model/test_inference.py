"""The evaluation geometry: mean-padded exact sizes, multi-scale resizing as in training."""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from deeplab.model.inference import InferenceStrategy, padded_size, predict_probs


class Probe(nn.Module):
    """A stand-in network that records its input size and echoes two channels as logits."""

    output_stride = 16

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1))
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x[:, :2] * 5



def test_views_are_padded_with_the_mean_to_exact_sizes_and_cropped_back():
    probe = Probe()
    x = torch.rand(1, 3, 40, 70)
    probs = predict_probs(probe, x)
    assert probe.sizes == [(49, 81)]  # smallest 16k+1 holding 40 x 70
    assert torch.allclose(probs, (x[:, :2] * 5).softmax(1), atol=1e-6)  # cropped back exactly
    predict_probs(probe, x, InferenceStrategy(pad_to=513))
    assert probe.sizes[-1] == (513, 513)
    assert padded_size(600, 16, 513) == 609  # larger than pad_to: the next exact size

    seen = []
    probe.forward = lambda v: (seen.append(v), v[:, :2])[1]
    predict_probs(probe, x)
    padded = seen[0]
    assert torch.equal(padded[..., :40, :70], x)
    assert torch.allclose(padded[..., 40:, :], probe.mean.expand(1, 3, 9, 81))


def test_multi_scale_resizes_as_training_does():
    probe = Probe()
    x = torch.rand(1, 3, 40, 60)
    probs = predict_probs(probe, x, InferenceStrategy(scales=(0.5,)))
    small = TF.resize(x, [20, 30], antialias=True)  # the training transform's resize
    logits = F.interpolate(small[:, :2] * 5, size=(40, 60), mode="bilinear", align_corners=False)
    assert torch.allclose(probs, logits.softmax(1), atol=1e-6)
