"""DVC stage deploy: the finetuned model as ONNX (fp32 with probabilities, and int8 calibrated
on training crops) for ONNX Runtime and OpenVINO -> models/deploy/."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.serving.deploy import run_deploy_stage


@stage_main
def main() -> None:
    p = stage_paths("model", "calibration", "out")
    params = load_params(sections=("deploy",))
    manifest = run_deploy_stage(params.deploy, p.model, p.calibration, p.out, params.seed)
    print(f"deploy: {', '.join(manifest['files'])} -> {p.out}")


if __name__ == "__main__":
    main()
