"""DVC stage evaluate: whole-split mIoU under each inference strategy and for each ablation
variant; tables and figures."""

from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.report import run_evaluate_stage


@stage_main
def main() -> None:
    params = load_params(sections=("evaluate", "ablations", "mlflow"))
    variants = {name: Path(f"models/variants/{name}.pt") for name in params["ablations"]}
    metrics = run_evaluate_stage(params, Path("models/finetune.pt"),
                                 Path("data/processed/voc_val.csv"), Path("reports"), variants)
    print(f"evaluate: val mIoU {metrics['miou']:.4f} (best strategy {metrics['best_strategy_miou']:.4f}); "
          f"variants {metrics['variants']}")


if __name__ == "__main__":
    main()
