"""Running the real pipeline in a temporary copy of the repository (shared by the end-to-end
tests)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def run(args, cwd, check=True, env=None, timeout=3600, merge=False):
    """A command with this interpreter's tools on PATH, the repo's own MLflow store, and the
    copy's own `src` first on the path (an edit to the copy is what its stages run). The
    timeout is a safety net against a hang, far above a busy machine's time (a tiny repro
    takes minutes)."""
    full = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TQDM_DISABLE": "1"}
    if (Path(cwd) / "src" / "deeplab").is_dir():
        full["PYTHONPATH"] = str(Path(cwd) / "src")
    full.update(env or {})
    if "MLFLOW_TRACKING_URI" not in (env or {}):
        full.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=cwd, env=full, stdout=subprocess.PIPE, text=True,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repo(work: Path, params: dict) -> Path:
    """A git repository at `work` holding the pipeline (dvc.yaml, stage scripts, src) and
    `params`."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", "pipeline", "src"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (work / "models" / "variants").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "models" / "variants" / ".gitignore", work / "models" / "variants")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / ".gitignore").write_text("/mlflow.db\n/mlflow.db.lock\n/mlartifacts/\n/data/.cache/\n"
                                     "/models/checkpoints/\n__pycache__/\n")
    run(["git", "init", "-q"], work)
    return work


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny(params: dict) -> dict:
    """Settings that run the whole pipeline in a couple of minutes on 2 CPU cores."""
    params["data"]["synthetic"].update(image_size=48, coco_train_images=12, coco_val_images=4,
                                       train_images=8, val_images=4, sbd_images=4,
                                       pool_images=6, pool_novel=0.34)
    params["preprocess"]["min_pixels"] = 10
    for stage in ("pretrain", "finetune"):
        params[stage].update(iterations=3, batch_size=2, crop_size=33, checkpoint_every=2, val_every=2)
    params["model"].update(aspp_channels=16, decoder_channels=16)
    params["runtime"]["workers"] = 0
    params["evaluate"].update(scales=[1.0, 1.5], trimap_widths=[2], sample_images=2, madds_size=65)
    params["deploy"].update(formats=["torch/fp32", "onnxruntime/fp32", "onnxruntime/int8"], calibration_images=4,
                            calibration_size=33)
    # two of the paper's ablations: one of the model (no decoder), one of the start (no COCO)
    params["ablations"] = {k: v for k, v in params["ablations"].items() if k in ("no_decoder", "no_coco")}
    return params


def run_stage(name: str, params, **paths):
    """A stage of `deeplab.stages` in this process (its `run`), paths by keyword; the optional
    paths and options it is not given are None."""
    from argparse import Namespace
    from importlib import import_module

    stage = import_module(f"deeplab.stages.{name}")
    names = (*stage.PATHS, *getattr(stage, "OPTIONAL", ()), *getattr(stage, "OPTIONS", ()))
    unknown = set(paths) - set(names)
    assert not unknown, f"stage {name} takes no {unknown}"
    return stage.run(params, Namespace(**{k: paths.get(k) for k in names}))


GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def copy_of(finished, tmp_path: Path) -> Path:
    """A private copy of the finished pipeline (git, DVC cache, MLflow store and all)."""
    work = tmp_path / "repo"
    shutil.copytree(finished[0], work, symlinks=True)
    return work
