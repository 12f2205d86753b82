"""DVC stage evaluate: whole-split mIoU under each inference strategy, for each ablation
variant and each deployed format (runtime/precision); tables and figures."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.report.ablations import run_evaluate_stage


@stage_main
def main() -> None:
    p = stage_paths("model", "variants", "deployed", "val_list", "classes", "reports")
    params = load_params(sections=("evaluate", "ablations", "deploy", "mlflow"))
    variants = {name: p.variants / f"{name}.pt" for name in params.ablations}
    metrics = run_evaluate_stage(params, p.model, p.val_list, p.reports, p.classes, variants,
                                 p.deployed)
    print(f"evaluate: val mIoU {metrics['miou']:.4f} (best strategy {metrics['best_strategy_miou']:.4f}); "
          f"variants {metrics['variants']}")


if __name__ == "__main__":
    main()
