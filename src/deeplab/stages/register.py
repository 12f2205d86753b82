"""DVC stage register: the finetuned model (and its deployed files within `deploy.max_drop`)
logged to MLflow and registered, with an alias by `register.promote`."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("register", "deploy", "mlflow")
PATHS = ("model", "metrics", "out")
OPTIONAL = ("deployed",)
SHIPS = ("deeplab.serving.pyfunc_model",)  # the served code it logs with the version


def run(params: Params, paths: Namespace) -> str:
    from ..core.io import write_json
    from ..serving.registry import register

    result = register(paths.model, paths.metrics, params, paths.deployed)
    write_json(paths.out, result)
    state = "registered" if result["new"] else "unchanged, already"
    return f"register: {result['name']} {state} version {result['version']} {result['aliases']}"
