"""The deployable model: RGB uint8 images in, label maps out, preprocessing included.

`Segmenter` wraps a `DeepLabV3Plus` with its inference strategy (output stride, scales,
flip) and the evaluation geometry (`inference.predict_probs`). It is what the registered
MLflow model runs (`pyfunc_model.py`: `N x H x W x 3` uint8 arrays in, `N x H x W` uint8
masks out), what `python -m deeplab.serving.predict` runs, and what `python -m deeplab.serving.export` exports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.errors import InputError
from ..data.classes import ClassList
from ..model import DeepLabV3Plus
from ..model.files import classes_of, model_from_state, read_model_file
from ..model.inference import InferenceStrategy, predict_probs
from ..tracking.registry import open_registered
from .programs import load_program


class Segmenter(nn.Module):
    """`N x H x W x 3` (or `H x W x 3`) uint8 RGB -> `N x H x W` (or `H x W`) uint8 labels."""

    def __init__(self, net: DeepLabV3Plus, strategy: InferenceStrategy = InferenceStrategy(),
                 classes: ClassList | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.classes = classes or ClassList.default(net.num_classes)  # names and palette
        if strategy.output_stride is not None:
            self.net.set_output_stride(strategy.output_stride)
        self._strategy = strategy
        self.temperature = 1.0  # calibration of its probabilities (a registered model's own)

    @property
    def strategy(self) -> InferenceStrategy:
        """The strategy it runs, with the output stride resolved."""
        return self._strategy.with_overrides(output_stride=self.net.output_stride)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `N x H x W x 3` -> the strategy's class probabilities, float `N x C x H x W`."""
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected RGB images N x H x W x 3, got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels (0-255), got {images.dtype}")
        x = images.permute(0, 3, 1, 2).to(self.net.mean.dtype).div(255)
        return predict_probs(self.net, x, self._strategy)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        batch = images.unsqueeze(0) if single else images
        if batch.dim() != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected RGB images N x H x W x 3 (or H x W x 3), got shape "
                             f"{tuple(images.shape)}")
        labels = self.probabilities(batch).argmax(1).to(torch.uint8)
        return labels[0] if single else labels


def load_segmenter(source: str | Path, strategy: InferenceStrategy | None = None,
                   device: str | torch.device = "cpu", **overrides: Any
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 `N x H x W x 3` -> uint8 `N x H x W` from a model file, a `models:/`/`runs:/` URI
    (verified against its registered sha256; `.temperature`, its registered calibration) or an
    exported `.pt2` program (checked to hold no pickled code).

    The strategy is `strategy` if given, else the one a registered model carries (single
    scale at the training output stride for a model file), with `overrides` (output_stride,
    scales, flip, pad_to; None = keep) applied. A `.pt2` program has its strategy compiled in.
    """
    spec = str(source)
    if spec.endswith(".pt2"):
        if strategy is not None or any(v is not None for v in overrides.values()):
            raise InputError(f"{spec}: an exported program has a fixed inference strategy; "
                             f"re-export it to change output stride, scales or flip")
        return load_program(spec).to(device)
    temperature = 1.0
    if spec.startswith(("models:/", "runs:/")) or "://" in spec:
        state, registered, temperature = open_registered(spec)
    else:
        state, registered = read_model_file(spec), InferenceStrategy()
    chosen = (strategy or registered).with_overrides(**overrides)
    segmenter = segmenter_from_state(state, chosen, spec).to(device)
    segmenter.temperature = temperature  # what its probabilities are calibrated with
    return segmenter


def segmenter_from_state(state: dict[str, Any], strategy: InferenceStrategy, source: str) -> Segmenter:
    """The `Segmenter` of checked model-file contents (`read_model_file`), in eval mode."""
    return Segmenter(model_from_state(state, source), strategy, classes_of(state)).eval()
