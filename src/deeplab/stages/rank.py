"""DVC stage rank: which unlabeled images to label next (the pool's list -> the ranking and a
contact sheet of the top images with their confidence maps), scored by the model with
probabilities calibrated by evaluate's temperature."""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from pathlib import Path

from ..core.schema import Params

SECTIONS = ("rank",)
PATHS = ("model", "pool", "calibration", "out", "sheet")
log = logging.getLogger(__name__)


def run(params: Params, paths: Namespace) -> str:
    import pandas as pd

    from ..core.io import save_figure, write_csv
    from ..model.device import select_device
    from ..model.files import classes_of, model_from_state, read_model_file
    from ..model.inference import ModelRunner
    from ..uncertainty.ranking import contact_sheet, rank_pool, top_images

    cfg = params.rank
    info = read_model_file(paths.model)
    classes = classes_of(info)
    calibration = json.loads(paths.calibration.read_text()) if paths.calibration.is_file() else {}
    temperature = float(calibration.get("temperature", 1.0))
    runner = ModelRunner(model_from_state(info, str(paths.model)), device=select_device("auto"))
    pool = pd.read_csv(paths.pool, dtype=str)
    table = rank_pool(runner, pool["image"].tolist(), classes, cfg.score, cfg.threshold,
                      temperature, cfg.max_pixels, pool["image_sig"].tolist())
    top = top_images(runner, table, cfg.top_k, cfg.score, cfg.threshold, temperature)
    write_csv(paths.out, table, index=False)
    save_figure(paths.sheet, contact_sheet(top, classes, cfg.score), dpi=90)
    log.info("top of %d by %s (T %.3f): %s", len(table), cfg.score, temperature,
             ", ".join(Path(p).name for p in table["image"].head(cfg.top_k)))
    return f"rank: {len(table)} unlabeled images ranked by {cfg.score} -> {paths.out}"
