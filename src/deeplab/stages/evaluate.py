"""DVC stage evaluate: every inference strategy, ablation variant and deployed format on the
validation split (measure), temperature scaling of the main model (calibrate), the tables,
figures and metrics (write), and all of it in the stage's MLflow run (log)."""

from __future__ import annotations

import logging
from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("evaluate", "ablations", "deploy", "mlflow")
PATHS = ("model", "variants", "deployed", "val_list", "classes", "reports")
log = logging.getLogger(__name__)


def run(params: Params, paths: Namespace) -> str:
    from ..data.classes import read_classes
    from ..data.dataset import read_list
    from ..model.device import select_device
    from ..report.measure import measure
    from ..report.write import log_reports, write_reports
    from ..tracking.runs import start_stage_run
    from ..uncertainty.calibration import calibrate

    classes = read_classes(paths.classes)
    rows = read_list(paths.val_list)
    variants = {name: paths.variants / f"{name}.pt" for name in params.ablations}
    device = select_device("auto")
    with start_stage_run("evaluate", params, params.mlflow.experiment, [paths.val_list]):
        measured = measure(params, paths.model, rows, classes, variants, paths.deployed, device)
        calibration = calibrate(measured.model, rows, classes, params.evaluate, device)
        metrics = write_reports(paths.reports, measured, calibration, classes)
        log_reports(paths.reports, measured.table, metrics, calibration)
    return (f"evaluate: val mIoU {metrics['miou']:.4f} (best strategy "
            f"{metrics['best_strategy']} {metrics['best_strategy_miou']:.4f}); variants "
            f"{metrics['variants']}")
