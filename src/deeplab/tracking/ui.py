"""`python -m deeplab.tracking.ui`: `mlflow ui` on this repository's tracking store, and the address
that opens the experiment in the model-training view.

Why the plain `mlflow ui` opens in the GenAI view: MLflow 3.17's web app decides the view
from its own workflow selector, the `workflowType` query parameter, else what the browser
stored (`localStorage["mlflow.workflowType"]`), else `genai`; the experiment's
`mlflow.experimentKind` tag is not consulted while that selector is enabled. No server-side
setting changes it, so the address printed here carries `workflowType=machine_learning`, and
the browser remembers the choice afterwards.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from ..core.cli import run_command

TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs page of an experiment in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def compare_url(base: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's Compare page of `run_ids`, in the model-training view."""
    runs = quote("[" + ",".join(f'"{r}"' for r in run_ids) + "]")
    experiments = quote(f'["{experiment_id}"]')
    return (f"{base.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}&"
            f"{TRAINING_VIEW}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.tracking.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    return run_command(lambda: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    import mlflow

    from ..core.config import load_params
    from ..core.errors import RegistryError
    from .store import check_store, tracking_uri

    uri = tracking_uri()
    check_store(uri)
    name = load_params(args.params, sections=("mlflow",)).mlflow.experiment
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        raise RegistryError(f"{uri}: no experiment {name!r} yet (run dvc repro first)")
    base = f"http://{args.host}:{args.port}"
    print(f"the {name} runs, in the model-training view: {experiment_url(base, experiment.experiment_id)}",
          flush=True)
    if uri.startswith(("http://", "https://")):
        print(f"(the tracking server {uri} serves the UI itself: open the same path there)")
        return 0
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return subprocess.call([str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", args.host,
                            "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
