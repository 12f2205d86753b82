"""DVC stage deploy: the finetuned model as ONNX (fp32 with probabilities, and int8 calibrated
on training crops) for ONNX Runtime and OpenVINO -> models/deploy/."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("deploy",)
PATHS = ("model", "calibration", "out")


def run(params: Params, paths: Namespace) -> str:
    from ..serving.deploy import deploy_model

    manifest = deploy_model(params.deploy, paths.model, paths.calibration, paths.out,
                                params.seed)
    return f"deploy: {', '.join(manifest['files'])} -> {paths.out}"
