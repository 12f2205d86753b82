"""What the evaluate stage writes and logs: the table (CSV and Markdown), per-class IoU,
boundary bands, calibration, metrics for register and `dvc exp show`, figures and samples;
and the same to the stage's MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.io import make_dirs, save_figure, write_csv, write_json, write_text
from ..data.classes import ClassList
from ..evaluation.metrics import bootstrap_miou, mdice_of_counts
from ..model.device import cpu_name
from .figures import (
    confusion_figure,
    curves_figure,
    per_class_figure,
    reliability_figure,
    rows_figure,
    sample_figure,
    trimap_figure,
)
from .measure import Measured

TABLES = ("ablations.csv", "ablations.md", "per_class_iou.csv", "trimap.csv", "calibration.csv",
          "trimap_variants.csv")


def deployed_metrics(df: pd.DataFrame, fp32_miou: float) -> dict[str, dict[str, float]]:
    """{runtime/precision: miou, interval, ms per image, drop below fp32} of the deployed rows."""
    rows = df[df["madds_b"].isna()]
    return {f"{r.runtime}/{r.precision}": {
        "miou": float(r.miou), "miou_low": float(r.miou_low), "miou_high": float(r.miou_high),
        "ms_per_image": float(r.ms_per_image), "drop": round(fp32_miou - float(r.miou), 4)}
        for r in rows.itertuples()}


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The few numbers `dvc exp show` leads with (DVC's metrics file of the evaluate stage;
    short keys so that they fit a terminal): the main model's mIoU and interval, each
    variant's mIoU, the best strategy's."""
    return {"miou": metrics["miou"], "low": metrics["miou_low"], "high": metrics["miou_high"],
            **{name: round(v, 4) for name, v in metrics["variants"].items()},
            "best": metrics["best_strategy_miou"]}


def main_metrics(measured: Measured, calibration: Any) -> dict[str, Any]:
    """metrics.json: the main model's single-scale scores at its training output stride with
    their interval, the best of its inference strategies, each variant's and deployed
    format's mIoU, and the calibration."""
    df, main = measured.table, measured.main
    train_os = measured.info["config"]["output_stride"]
    own = df[(df["variant"] == "main") & df["madds_b"].notna()]  # the main model's strategies
    main_row = own[(own["eval_os"] == train_os) & ~own["ms"] & ~own["flip"]].iloc[0]
    best = own.loc[own["miou"].idxmax()]
    return {"miou": round(main["miou"], 4), "miou_low": float(main_row["miou_low"]),
            "miou_high": float(main_row["miou_high"]), "pixel_acc": round(main["pixel_acc"], 4),
            "mean_acc": round(main["mean_acc"], 4), "fwiou": round(main["fwiou"], 4),
            **{k: round(main[k], 4) for k in ("mdice", "mprecision", "mrecall")},
            **dict(zip(("mdice_low", "mdice_high"),
                       (round(v, 4) for v in bootstrap_miou(main["per_image"],
                                                            score=mdice_of_counts)))),
            "machine": cpu_name(),  # where ms_per_image was measured
            "best_strategy_miou": float(best["miou"]), "best_strategy": best["row"],
            "madds_b": float(main_row["madds_b"]),
            "trimap": {str(k): round(v, 4) for k, v in main["trimap"].items()},
            "variants": {name: float(df.loc[df["variant"] == name, "miou"].iloc[0])
                         for name in measured.trimaps if name != "main"},
            "deployed": deployed_metrics(df, float(main_row["miou"])),
            **calibration.metrics()}


def _save_figure(path: Path, fig: Any) -> None:
    save_figure(path, fig, dpi=110, bbox_inches="tight")


def write_reports(reports: Path, measured: Measured, calibration: Any,
                  classes: ClassList) -> dict[str, Any]:
    """Every table, figure and sample of the evaluate stage into `reports`; its metrics."""
    df, main = measured.table, measured.main
    make_dirs(reports)
    write_csv(reports / "ablations.csv", df, index=False)
    write_text(reports / "ablations.md", df.to_markdown(index=False) + "\n")
    iou = np.nan_to_num(main["iou"])
    per_class = {k: np.nan_to_num(np.round(main[k], 4)) for k in ("dice", "precision", "recall")}
    write_csv(reports / "per_class_iou.csv",
              pd.DataFrame({"class": classes.names, "iou": iou, **per_class}), index=False)
    write_csv(reports / "trimap.csv", pd.DataFrame({"band_width": list(main["trimap"]),
                                                    "miou": list(main["trimap"].values())}),
              index=False)
    wide = pd.DataFrame({name: pd.Series(curve) for name, curve in measured.trimaps.items()})
    write_csv(reports / "trimap_variants.csv", wide.rename_axis("band_width").round(4))
    write_csv(reports / "calibration.csv", pd.DataFrame(calibration.per_class), index=False)
    write_json(reports / "calibration.json", calibration.metrics())  # what rank reads
    variants = [name for name in measured.trimaps if name != "main"]
    figures = {"trimap.png": trimap_figure(measured.trimaps),
               "reliability.png": reliability_figure(calibration.before, calibration.after,
                                                     calibration.temperature),
               "confusion.png": confusion_figure(main["cm"], classes.names),
               "ablations.png": rows_figure(df),
               "per_class_iou.png": per_class_figure(classes.names, iou),
               "curves.png": curves_figure({"main": reports / "finetune", **{
                   name: reports / "variants" / name for name in variants}})}
    for name, figure in figures.items():
        _save_figure(reports / name, figure)
    samples = reports / "samples"
    make_dirs(samples)
    for k, (image, label, _) in enumerate(main["samples"]):
        _save_figure(samples / f"sample_{k:02d}.png", sample_figure(
            image, label, {name: preds[k] for name, preds in measured.predictions.items()}, classes))
    metrics = main_metrics(measured, calibration)
    write_json(reports / "metrics.json", metrics)
    write_text(reports / "summary.json", json.dumps(summary(metrics), indent=2) + "\n")  # in order
    return metrics


FIGURES = ("trimap.png", "reliability.png", "confusion.png", "ablations.png", "per_class_iou.png",
           "curves.png")


def log_reports(reports: Path, df: pd.DataFrame, metrics: dict[str, Any], calibration: Any) -> None:
    """The evaluate stage's results in its active MLflow run: the metrics, every row with its
    interval (`no_sc_os16/miou_low`), deployed timings, the table as `ablations.json`, per-class
    ECE, the written tables, figures and samples."""
    import mlflow

    mlflow.log_metrics({k: v for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    mlflow.set_tag("best_strategy", metrics["best_strategy"])
    mlflow.log_metrics({f"{r['row']}/{key}": float(r[key]) for _, r in df.iterrows()
                        for key in ("miou", "miou_low", "miou_high", "mdice")})
    mlflow.log_metrics({f"{r['row']}/ms_per_image": float(r["ms_per_image"])
                        for _, r in df.iterrows() if r["row"].startswith("deployed_")})
    mlflow.log_metrics({f"trimap_{k}": v for k, v in metrics["trimap"].items()})
    mlflow.log_table(df, "ablations.json")  # the UI shows it as a table
    mlflow.log_metrics({f"ece/{r['class']}": r["ece_after"] for r in calibration.per_class
                        if r["pixels"]})
    for name in (*TABLES, *FIGURES):
        mlflow.log_artifact(str(reports / name))
    mlflow.log_artifacts(str(reports / "samples"), "samples")
