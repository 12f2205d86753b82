"""DVC stage register: log the finetuned model to MLflow and register it with an alias."""

from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.io import write_json
from deeplab.registry import register


@stage_main
def main() -> None:
    params = load_params(sections=("register", "mlflow"))
    result = register(Path("models/finetune.pt"), Path("reports/metrics.json"),
                      params["register"]["model_name"], params, params["register"]["min_miou"])
    write_json(Path("reports/registry.json"), result)
    state = "registered" if result["new"] else "unchanged, already"
    print(f"register: {result['name']} {state} version {result['version']} {result['aliases']}")


if __name__ == "__main__":
    main()
