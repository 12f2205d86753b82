"""The registered model's code (MLflow "models from code"): uint8 RGB images -> uint8 label maps.

MLflow stores this file as source next to the model, with the `deeplab` package
(`code_paths`), the weights as a model file that is read with `weights_only=True`, and the
inference strategy as JSON. Loading the registered model runs this code, which is plain text
a user can read in the model's artifacts; no pickled object is loaded, and the weights and
strategy must match the sha256 recorded in the model's metadata at registration.
Pass `model_config={"device": "cuda"}` to `mlflow.pyfunc.load_model` for GPU.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class SegmenterModel(PythonModel):
    """pyfunc wrapper of `deeplab.serving.segmenter.Segmenter`."""

    def load_context(self, context) -> None:
        from pathlib import Path

        from deeplab.model_files import model_from_state
        from deeplab.registered import logged_model_dir, read_logged_model
        from deeplab.serving.segmenter import Segmenter

        # The weights and strategy are checked against the sha256 recorded at registration.
        model_dir = logged_model_dir(Path(context.artifacts["model_file"]))
        state, strategy = read_logged_model(model_dir, str(model_dir))
        self.device = torch.device((context.model_config or {}).get("device", "cpu"))
        self.segmenter = Segmenter(model_from_state(state), strategy).to(self.device).eval()

    def predict(self, context, model_input, params=None):  # no type hints: the signature is explicit
        images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.uint8))
        with torch.no_grad():
            return self.segmenter(images.to(self.device)).cpu().numpy()


mlflow.models.set_model(SegmenterModel())
