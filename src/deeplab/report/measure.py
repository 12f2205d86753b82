"""What the evaluate stage measures: the main model under every inference strategy of
`params.evaluate` (Table 5's columns), each ablation variant at its training output stride and
each deployed format, one table row each with a bootstrap interval of its mIoU."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from ..core.schema import EvaluateConfig, Params, WindowSettings
from ..data.classes import ClassList
from ..evaluation.evaluate import evaluate
from ..evaluation.metrics import bootstrap_miou
from ..model.files import classes_of, model_from_state, read_model_file
from ..model.inference import InferenceStrategy, ModelRunner
from ..serving.windows import segment_image
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


def windowed(runner: Any, windows: WindowSettings) -> Callable[[np.ndarray], np.ndarray]:
    """`H x W x 3` uint8 -> `H x W` labels through `runner`, in sliding windows as `windows`
    says (a tile for every image, or the default tile above `whole_pixels`)."""
    return lambda image: segment_image(runner, image, windows.tile, windows.overlap,
                                       windows.whole_pixels)


def table_row(variant: str, info: dict[str, Any], strategy: InferenceStrategy, result: dict[str, Any],
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
            "miou": round(result["miou"], 4), "mdice": round(result["mdice"], 4),
            "madds_b": round(madds / 1e9, 2),
            "miou_low": round(low, 4), "miou_high": round(high, 4),
            "ms_per_image": round(1000 * result["seconds_per_image"], 2)}


def torch_threads(n: int | None = None) -> int:
    """torch's CPU thread count (set to `n` if given): timed formats run at their own count."""
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def check_classes(model_file: Path, info: dict[str, Any], classes: ClassList) -> None:
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
                       desc=f"deployed {fmt}", predict=windowed(runner, params.evaluate))
        out.append(table_row("main", info, InferenceStrategy(), res, 0, fmt) | {"madds_b": None})
        log.info("deployed %s -> mIoU %.4f, %.1f ms/image", fmt, res["miou"],
                 1000 * res["seconds_per_image"])
    return out


def row_label(row: Any) -> str:
    """A row's name in metrics and figures: `main_os16_ms_flip`, `no_decoder_os16`,
    `deployed_openvino_int8`."""
    if pd.isna(row["madds_b"]):
        return f"deployed_{row['runtime']}_{row['precision']}"
    return (f"{row['variant']}_os{row['eval_os']}" + ("_ms" if row["ms"] else "")
            + ("_flip" if row["flip"] else ""))


@dataclass
class Measured:
    """The evaluate stage's measurements: the table (one row per strategy, variant and deployed
    format), the main model's single-scale result at its training output stride (`main`:
    confusion matrix, trimap, samples), each model's trimap and sample predictions, and the
    main model itself (loaded, on `device`) for calibration."""

    table: pd.DataFrame
    main: dict[str, Any]
    info: dict[str, Any]
    model: Any
    trimaps: dict[str, dict[int, float]] = field(default_factory=dict)
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)


def measure(params: Params, model_file: Path, rows: pd.DataFrame, classes: ClassList,
            variant_files: dict[str, Path], deployed: Path | None, device: Any) -> Measured:
    """Every row of the evaluate stage's table, on the validation `rows`."""
    cfg = params.evaluate
    num_classes = len(classes)
    info = read_model_file(model_file)
    check_classes(model_file, info, classes)
    train_os = info["config"]["output_stride"]
    model = model_from_state(info, str(model_file)).to(device).eval()
    table, main = [], None
    for strategy in strategies(cfg):
        model.set_output_stride(strategy.output_stride)
        is_main = (strategy.output_stride == train_os and not strategy.multi_scale
                   and not strategy.flip)
        res = evaluate(model, rows, num_classes, device, strategy,
                       cfg.trimap_widths if is_main else (),
                       desc=f"OS{strategy.output_stride} ms={strategy.multi_scale} flip={strategy.flip}",
                       keep_predictions=cfg.sample_images if is_main else 0,
                       predict=windowed(ModelRunner(model, strategy, device), cfg))
        madds = strategy_madds(model, cfg.madds_size, strategy)
        table.append(table_row("main", info, strategy, res, madds))
        main = res if is_main else main
        log.info("%s -> mIoU %.4f, %.1fB madds", strategy, res["miou"], madds / 1e9)
    if main is None:
        raise ConfigError(f"evaluate.output_strides must include the training output stride "
                          f"{train_os} to produce the main metrics")
    model.set_output_stride(train_os)
    out = Measured(pd.DataFrame(), main, info, model, {"main": main["trimap"]},
                   {"main": [pred for _, _, pred in main["samples"]]})
    for name, path in variant_files.items():
        vinfo = read_model_file(path)
        check_classes(path, vinfo, classes)
        vmodel = model_from_state(vinfo, str(path)).to(device).eval()
        strategy = InferenceStrategy(pad_to=cfg.pad_to)  # its training OS, single scale
        res = evaluate(vmodel, rows, num_classes, device, strategy, cfg.trimap_widths,
                       desc=f"variant {name}", keep_predictions=cfg.sample_images,
                       predict=windowed(ModelRunner(vmodel, strategy, device), cfg))
        madds = strategy_madds(vmodel, cfg.madds_size, strategy)
        table.append(table_row(name, vinfo, strategy, res, madds))
        out.trimaps[name] = res["trimap"]
        out.predictions[name] = [pred for _, _, pred in res["samples"]]
        log.info("variant %s -> mIoU %.4f, %.1fB madds", name, res["miou"], madds / 1e9)
    threads = torch_threads()
    if deployed is not None and params.deploy is not None:
        table += deployed_rows(params, info, model_file, deployed, rows, num_classes)
    torch_threads(threads)
    df = pd.DataFrame(table)
    df.insert(0, "row", [row_label(r) for _, r in df.iterrows()])
    out.table = df
    return out
