"""DVC stage register: the finetuned model (and its deployed files within `deploy.max_drop`)
logged to MLflow and registered, with an alias by `register.promote`, and its model card
(`MODEL_CARD.md`: written to `--card`, logged with the version, its registry description)."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("register", "deploy", "mlflow", "data")
PATHS = ("model", "metrics", "out")
OPTIONAL = ("deployed", "per_class", "data_summary", "card")
SHIPS = ("deeplab.serving.pyfunc_model",)  # the served code it logs with the version


def run(params: Params, paths: Namespace) -> str:
    from ..core.io import write_json
    from ..serving.registry import register

    result = register(paths.model, paths.metrics, params, paths.deployed, paths.per_class,
                      paths.data_summary, paths.card)
    write_json(paths.out, result)
    state = "registered" if result["new"] else "unchanged, already"
    return f"register: {result['name']} {state} version {result['version']} {result['aliases']}"
