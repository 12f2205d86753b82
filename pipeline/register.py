"""DVC stage register: log the finetuned model to MLflow and register it with an alias."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.core.io import write_json
from deeplab.serving.registry import register


@stage_main
def main() -> None:
    p = stage_paths("model", "metrics", "out", optional=("deployed",))  # deployed: its files
    params = load_params(sections=("register", "deploy", "mlflow"))
    result = register(p.model, p.metrics, params, p.deployed)
    write_json(p.out, result)
    state = "registered" if result["new"] else "unchanged, already"
    print(f"register: {result['name']} {state} version {result['version']} {result['aliases']}")


if __name__ == "__main__":
    main()
