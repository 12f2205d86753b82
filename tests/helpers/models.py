"""Small networks, model files, crafted payloads and local services for the tests."""

import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab.core.config import parse_params
from deeplab.core.schema import Params
from deeplab.model import DeepLabV3Plus


def tiny_net(seed: int = 0, num_classes: int = 21, channels: int = 16,
             backbone: str = "mobilenet_v2") -> DeepLabV3Plus:
    """A small seeded network in eval mode (MobileNetV2, thin heads)."""
    torch.manual_seed(seed)
    return DeepLabV3Plus(num_classes, backbone, 16, aspp_channels=channels,
                         decoder_channels=channels).eval()


class Evil:
    """Unpickling this runs a shell command: what a crafted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def image_folder(path: Path, names: dict[str, tuple[int, int]]) -> Path:
    """`path` holding random RGB images {file name: (height, width)}."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in names.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / name)
    return path


def register_params(name: str = "seg", experiment: str = "test", promote: str = "if_better",
                    **inference) -> Params:
    """The `register` and `mlflow` sections only."""
    strategy = {"output_stride": 16, "scales": [1.0], "flip": False, **inference}
    return parse_params({"seed": 0, "mlflow": {"experiment": experiment},
                         "register": {"model_name": name, "min_miou": 0.0, "promote": promote,
                                      "inference": strategy}},
                        sections=("register", "mlflow"))


def metrics_file(folder: Path, miou: float) -> Path:
    """An evaluate-stage metrics file holding `miou`."""
    path = folder / f"metrics_{miou}.json"
    path.write_text(json.dumps({"miou": miou}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc, timeout: float = 180) -> None:
    """Until `url` answers 200; AssertionError with the server's output if it dies or times out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def model_and_metrics(folder: Path, seed: int, miou: float) -> tuple[Path, Path]:
    """A model file of `tiny_net(seed)` and a metrics file saying `miou`: one registration."""
    from deeplab.model.files import save_model

    model = folder / f"m{seed}.pt"
    save_model(model, tiny_net(seed, channels=8), stage="finetune")
    metrics = folder / f"metrics{seed}.json"
    metrics.write_text(json.dumps({"miou": miou}))
    return model, metrics


def reference_logits(net: DeepLabV3Plus, image: np.ndarray) -> torch.Tensor:
    """`C x H x W` logits in the reference geometry, written independently: a mean-pixel
    canvas of the smallest k*OS+1 size holding the image, the image in its top-left corner,
    logits cropped back."""
    h, w = image.shape[:2]
    os_ = net.output_stride
    ph, pw = -(-(h - 1) // os_) * os_ + 1, -(-(w - 1) // os_) * os_ + 1
    canvas = net.mean.reshape(1, 3, 1, 1).repeat(1, 1, ph, pw)
    canvas[..., :h, :w] = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return net(canvas)[0, :, :h, :w]


def reference_labels(net: DeepLabV3Plus, image: np.ndarray) -> np.ndarray:
    """`H x W` uint8 labels in the reference geometry (`reference_logits`)."""
    return reference_logits(net, image).argmax(0).numpy().astype(np.uint8)


def reference_probs(net: DeepLabV3Plus, image: np.ndarray) -> torch.Tensor:
    """`C x H x W` softmax probabilities in the reference geometry (`reference_logits`)."""
    return reference_logits(net, image).softmax(0)


def shallow(net: DeepLabV3Plus, units: int = 2) -> DeepLabV3Plus:
    """`net` with its backbone's repeated units cut: each ResNet stage to its first `units`
    units, MobileNetV2's stages to the units that change the width or the stride (its identity
    residual blocks left out). The same kinds of layers, strides, dilations and multi-grid rates
    in a graph a fraction the size (ResNet-101: 33 units -> 8; MobileNetV2: 13 -> 5), for
    checks (exports, runtimes) whose outcome depth does not change. Xception-65 runs timm's
    own blocks: left whole."""
    import torch.nn as nn

    backbone = net.backbone
    kind = type(backbone).__name__
    for i, stage in enumerate(backbone.stages):
        if kind == "ResNetBackbone":
            backbone.stages[i] = stage[:units]
        elif kind == "MobileNetV2Backbone":
            backbone.stages[i] = nn.Sequential(*[u for u in stage if not u.use_res_connect])
    backbone.set_output_stride(backbone.output_stride)  # rates of the units kept
    return net
