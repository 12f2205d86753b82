"""The evaluate stage: inference strategies, the Table 5-style table, figures and metrics."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..core.errors import ConfigError
from ..core.io import make_dirs, save_figure, write_csv, write_json, write_text
from ..core.schema import EvaluateConfig, Params
from ..data.classes import ClassList, read_classes
from ..data.dataset import read_list
from ..device import select_device
from ..evaluation.evaluate import evaluate
from ..evaluation.inference import InferenceStrategy, ModelRunner
from ..evaluation.metrics import bootstrap_miou
from ..model_files import classes_of, model_from_state, read_model_file
from .figures import (
    confusion_figure,
    curves_figure,
    per_class_figure,
    reliability_figure,
    rows_figure,
    sample_figure,
    trimap_figure,
)
from .madds import count_madds

log = logging.getLogger(__name__)


def strategies(cfg: EvaluateConfig) -> list[InferenceStrategy]:
    """(eval OS, multi-scale, flip) combinations declared in `params.evaluate`."""
    scale_options = [(1.0,), tuple(cfg.scales)] if len(cfg.scales) > 1 else [(1.0,)]
    return [InferenceStrategy(os_, scales, flip, cfg.pad_to)
            for os_, scales, flip in itertools.product(cfg.output_strides, scale_options, cfg.flip)]


def strategy_madds(model, size: int, strategy: InferenceStrategy) -> int:
    """Multiply-adds of one image at `size` x `size` under a strategy (all scales and flips)."""
    total = sum(count_madds(model, (max(1, round(size * s)),) * 2) for s in strategy.scales)
    return total * (2 if strategy.flip else 1)


def _save_figure(path: Path, fig: Figure) -> None:
    save_figure(path, fig, dpi=110, bbox_inches="tight")


def _row(variant: str, info: dict[str, Any], strategy: InferenceStrategy, result: dict[str, Any],
         madds: int, fmt: str = "torch/fp32") -> dict[str, Any]:
    """One line of the ablation table (the paper's Table 5 columns, the runtime and precision
    it ran in), with a 95% interval of the mIoU from a bootstrap over the validation images
    and the inference time per image."""
    mcfg = info["config"]
    low, high = bootstrap_miou(result["per_image"])
    runtime, precision = fmt.split("/")
    return {"variant": variant, "runtime": runtime, "precision": precision,
            "train_os": mcfg["output_stride"],
            "eval_os": strategy.output_stride or mcfg["output_stride"],
            "ms": strategy.multi_scale, "flip": strategy.flip,
            "decoder": mcfg["decoder"], "sc": mcfg["separable"],
            "coco": str(info["info"].get("init", "")).startswith("pretrain"),
            "miou": round(result["miou"], 4), "madds_b": round(madds / 1e9, 2),
            "miou_low": round(low, 4), "miou_high": round(high, 4),
            "ms_per_image": round(1000 * result["seconds_per_image"], 2)}


def torch_threads(n: int | None = None) -> int:
    """torch's CPU thread count (set to `n` if given): timed formats run at their own count."""
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def deployed_metrics(df: pd.DataFrame, fp32_miou: float) -> dict[str, dict[str, float]]:
    """{runtime/precision: miou, interval, ms per image, drop below fp32} of the deployed rows."""
    rows = df[df["madds_b"].isna()]
    return {f"{r.runtime}/{r.precision}": {
        "miou": float(r.miou), "miou_low": float(r.miou_low), "miou_high": float(r.miou_high),
        "ms_per_image": float(r.ms_per_image), "drop": round(fp32_miou - float(r.miou), 4)}
        for r in rows.itertuples()}


def _same_classes(model_file: Path, info: dict[str, Any], classes: ClassList) -> None:
    found = classes_of(info)
    if found.names != classes.names:
        raise ConfigError(f"{model_file}: trained for the classes {', '.join(found.names)}, the "
                          f"validation data has {', '.join(classes.names)}; rerun its training "
                          f"stage (dvc repro)")


def deployed_rows(params: Params, info: dict[str, Any], model_file: Path, deployed: Path,
                  rows: pd.DataFrame, num_classes: int) -> list[dict[str, Any]]:
    """One row per deployed format (`deploy.formats`) this machine runs: the main model's
    single-scale strategy at its training output stride, `deploy.threads` threads."""
    import torch

    from ..serving.deploy import runners
    from ..serving.runtimes import open_runner

    cfg = params.deploy
    onnx_formats = [f for f in cfg.formats if not f.startswith("torch/")]
    found = list(runners(deployed, onnx_formats, cfg.threads)) if onnx_formats else []
    for fmt in cfg.formats:
        if fmt.startswith("torch/"):
            try:
                found.append((fmt, open_runner(model_file, "torch", fmt.split("/")[1], cfg.threads)))
            except ConfigError as exc:
                log.warning("deploy format %s skipped: %s", fmt, exc)
    out = []
    for fmt, runner in sorted(found, key=lambda item: cfg.formats.index(item[0])):
        res = evaluate(None, rows, num_classes, torch.device("cpu"), runner=runner,
                       desc=f"deployed {fmt}", windows=params.evaluate)
        out.append(_row("main", info, InferenceStrategy(), res, 0, fmt) | {"madds_b": None})
        log.info("deployed %s -> mIoU %.4f, %.1f ms/image", fmt, res["miou"],
                 1000 * res["seconds_per_image"])
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The few numbers `dvc exp show` leads with (DVC's metrics file of the evaluate stage;
    short keys so that they fit a terminal): the main model's mIoU and interval, each
    variant's mIoU, the best strategy's."""
    return {"miou": metrics["miou"], "low": metrics["miou_low"], "high": metrics["miou_high"],
            **{name: round(v, 4) for name, v in metrics["variants"].items()},
            "best": metrics["best_strategy_miou"]}


def row_label(row: Any) -> str:
    """A row's name in metrics and figures: `main_os16_ms_flip`, `no_decoder_os16`,
    `deployed_openvino_int8`."""
    if pd.isna(row["madds_b"]):
        return f"deployed_{row['runtime']}_{row['precision']}"
    return (f"{row['variant']}_os{row['eval_os']}" + ("_ms" if row["ms"] else "")
            + ("_flip" if row["flip"] else ""))


def calibrate_main(model: Any, rows: pd.DataFrame, classes: ClassList, cfg: EvaluateConfig,
                   device: Any) -> Any:
    """Temperature scaling of the main model (its training output stride, single scale) on a
    sample of `cfg.calibration_pixels` validation pixels, with ECE before and after."""
    from ..uncertainty.calibration import calibration_of, sample_split

    runner = ModelRunner(model, InferenceStrategy(pad_to=cfg.pad_to), device)
    logp, labels = sample_split(runner, rows, len(classes), cfg.calibration_pixels, cfg)
    result = calibration_of(logp, labels, classes.names, cfg.calibration_bins)
    m = result.metrics()
    log.info("calibration: T %.3f fitted on %d pixels; on %d held-out pixels NLL %s -> %s, "
             "ECE %s -> %s%s", result.temperature, result.pixels, result.heldout, m["nll"],
             m["nll_calibrated"], m["ece"], m["ece_calibrated"],
             f" ({result.reason})" if result.reason else "")
    return result


def run_evaluate_stage(params: Params, model_file: Path, val_list: Path, reports: Path,
                       classes_file: Path, variant_files: dict[str, Path] | None = None,
                       deployed: Path | None = None) -> dict[str, Any]:
    """Evaluate the finetuned model under every strategy, each ablation variant at its
    training output stride (single scale) and each deployed format; write tables, plots and
    metrics, and log them to the stage's MLflow run (which spans the whole evaluation).
    Per-class figures use the dataset's class names and colours."""
    from ..tracking import start_stage_run

    with start_stage_run("evaluate", params, params.mlflow.experiment, [val_list]):
        return _evaluate_stage(params, model_file, val_list, reports, classes_file,
                               variant_files or {}, deployed)


def _evaluate_stage(params: Params, model_file: Path, val_list: Path, reports: Path,
                    classes_file: Path, variant_files: dict[str, Path],
                    deployed: Path | None) -> dict[str, Any]:
    import mlflow

    cfg = params.evaluate
    device = select_device("auto")
    classes = read_classes(classes_file)
    num_classes = len(classes)
    info = read_model_file(model_file)
    _same_classes(model_file, info, classes)
    mcfg = info["config"]
    model = model_from_state(info, str(model_file)).to(device).eval()
    rows = read_list(val_list)
    make_dirs(reports)
    table = []
    main = None
    for strategy in strategies(cfg):
        model.set_output_stride(strategy.output_stride)
        is_main = (strategy.output_stride == mcfg["output_stride"] and not strategy.multi_scale
                   and not strategy.flip)
        res = evaluate(model, rows, num_classes, device, strategy,
                       cfg.trimap_widths if is_main else (),
                       desc=f"OS{strategy.output_stride} ms={strategy.multi_scale} flip={strategy.flip}",
                       keep_predictions=cfg.sample_images if is_main else 0, windows=cfg)
        madds = strategy_madds(model, cfg.madds_size, strategy)
        table.append(_row("main", info, strategy, res, madds))
        if is_main:
            main = res
        log.info("%s -> mIoU %.4f, %.1fB madds", strategy, res["miou"], madds / 1e9)
    if main is None:
        raise ConfigError(f"evaluate.output_strides must include the training output stride "
                         f"{mcfg['output_stride']} to produce the main metrics")
    model.set_output_stride(mcfg["output_stride"])
    calibration = calibrate_main(model, rows, classes, cfg, device)
    trimaps = {"main": main["trimap"]}
    predictions = {"main": [pred for _, _, pred in main["samples"]]}
    for name, path in variant_files.items():
        vinfo = read_model_file(path)
        _same_classes(path, vinfo, classes)
        vmodel = model_from_state(vinfo, str(path)).to(device).eval()
        strategy = InferenceStrategy(pad_to=cfg.pad_to)  # its training OS, single scale
        res = evaluate(vmodel, rows, num_classes, device, strategy, cfg.trimap_widths,
                       desc=f"variant {name}", keep_predictions=cfg.sample_images, windows=cfg)
        madds = strategy_madds(vmodel, cfg.madds_size, strategy)
        table.append(_row(name, vinfo, strategy, res, madds))
        trimaps[name] = res["trimap"]
        predictions[name] = [pred for _, _, pred in res["samples"]]
        log.info("variant %s -> mIoU %.4f, %.1fB madds", name, res["miou"], madds / 1e9)
    threads = torch_threads()
    if deployed is not None and params.deploy is not None:
        table += deployed_rows(params, info, model_file, deployed, rows, num_classes)
    torch_threads(threads)
    df = pd.DataFrame(table)
    df.insert(0, "row", [row_label(r) for _, r in df.iterrows()])
    write_csv(reports / "ablations.csv", df, index=False)
    write_text(reports / "ablations.md", df.to_markdown(index=False) + "\n")
    iou = np.nan_to_num(main["iou"])
    write_csv(reports / "per_class_iou.csv", pd.DataFrame({"class": classes.names, "iou": iou}),
              index=False)
    write_csv(reports / "trimap.csv", pd.DataFrame({"band_width": list(main["trimap"]),
                                                    "miou": list(main["trimap"].values())}),
              index=False)
    wide = pd.DataFrame({name: pd.Series(curve) for name, curve in trimaps.items()})
    write_csv(reports / "trimap_variants.csv", wide.rename_axis("band_width").round(4))
    write_csv(reports / "calibration.csv", pd.DataFrame(calibration.per_class), index=False)
    write_json(reports / "calibration.json", calibration.metrics())  # what rank reads
    figures = {"trimap.png": trimap_figure(trimaps),
               "reliability.png": reliability_figure(calibration.before, calibration.after,
                                                     calibration.temperature),
               "confusion.png": confusion_figure(main["cm"], classes.names),
               "ablations.png": rows_figure(df),
               "per_class_iou.png": per_class_figure(classes.names, iou),
               "curves.png": curves_figure({"main": reports / "finetune", **{
                   name: reports / "variants" / name for name in variant_files}})}
    for name, figure in figures.items():
        _save_figure(reports / name, figure)
    samples = reports / "samples"
    make_dirs(samples)
    for k, (image, label, _) in enumerate(main["samples"]):
        _save_figure(samples / f"sample_{k:02d}.png", sample_figure(
            image, label, {name: preds[k] for name, preds in predictions.items()}, classes))
    torch_rows = df["runtime"] == "torch"
    main_row = df[(df["variant"] == "main") & (df["eval_os"] == mcfg["output_stride"]) & ~df["ms"]
                  & ~df["flip"] & torch_rows & (df["precision"] == "fp32")].iloc[0]
    strategies_only = df[df["madds_b"].notna()]
    best = strategies_only.loc[strategies_only["miou"].idxmax()]
    metrics = {"miou": round(main["miou"], 4), "miou_low": float(main_row["miou_low"]),
               "miou_high": float(main_row["miou_high"]), "pixel_acc": round(main["pixel_acc"], 4),
               "mean_acc": round(main["mean_acc"], 4), "fwiou": round(main["fwiou"], 4),
               "best_strategy_miou": float(best["miou"]), "best_strategy": best["row"],
               "madds_b": float(main_row["madds_b"]),
               "trimap": {str(k): round(v, 4) for k, v in main["trimap"].items()},
               "variants": {name: float(df.loc[df["variant"] == name, "miou"].iloc[0])
                            for name in trimaps if name != "main"},
               "deployed": deployed_metrics(df, float(main_row["miou"])),
               **calibration.metrics()}
    write_json(reports / "metrics.json", metrics)
    write_text(reports / "summary.json", json.dumps(summary(metrics), indent=2) + "\n")  # in order
    mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    mlflow.set_tag("best_strategy", best["row"])
    mlflow.log_metrics({f"{r['row']}/{key}": float(r[key]) for _, r in df.iterrows()
                        for key in ("miou", "miou_low", "miou_high")})
    mlflow.log_metrics({f"{r['row']}/ms_per_image": float(r["ms_per_image"])
                        for _, r in df.iterrows() if r["row"].startswith("deployed_")})
    mlflow.log_metrics({f"trimap_{k}": v for k, v in metrics["trimap"].items()})
    mlflow.log_table(df, "ablations.json")  # the UI shows it as a table
    mlflow.log_metrics({f"ece/{r['class']}": r[key] for r in calibration.per_class
                        for key in ("ece_after",) if r["pixels"]})
    for name in ("ablations.csv", "ablations.md", "per_class_iou.csv", "trimap.csv", "calibration.csv",
                 "trimap_variants.csv", *figures):
        mlflow.log_artifact(str(reports / name))
    mlflow.log_artifacts(str(samples), "samples")
    return metrics
