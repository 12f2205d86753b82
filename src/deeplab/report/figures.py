"""The evaluate stage's figures, drawn with matplotlib into PNGs: DVC shows them as image plots
(no JavaScript, nothing loaded from the network) and MLflow as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data.classes import ClassList
from ..data.palette import colorize


def confusion_figure(cm: np.ndarray, names: tuple[str, ...]) -> Figure:
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.2 * len(names), 24)
    fig = Figure(figsize=(size, size * 7 / 8))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    return fig


def trimap_figure(curves: dict[str, dict[int, float]]) -> Figure:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(list(curve), list(curve.values()), marker="o", label=name)
    ax.set_xlabel("band width around object boundaries (pixels)")
    ax.set_ylabel("mIoU inside the band")
    ax.set_title("trimap: accuracy near boundaries")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return None if frame.empty else frame


def curves_figure(runs: dict[str, Path]) -> Figure:
    """Training loss and validation mIoU of the main model and every variant on shared axes
    (`runs`: {name: its reports folder}; pretraining, on COCO, has curves of its own)."""
    fig = Figure(figsize=(10, 3.8))
    loss_ax, val_ax = fig.subplots(1, 2)
    for name, folder in runs.items():
        curve, val = _read(folder / "curve.csv"), _read(folder / "val_curve.csv")
        style = {"lw": 2.2} if name == "main" else {"lw": 1.2}
        if curve is not None:
            loss_ax.plot(curve["iteration"], curve["loss"], label=name, **style)
        if val is not None:
            val_ax.plot(val["iteration"], val["val_miou"], marker="o", label=name, **style)
    loss_ax.set(xlabel="iteration", ylabel="training loss", title="loss: main model and variants")
    val_ax.set(xlabel="iteration", ylabel="val mIoU", title="validation mIoU (target val split)",
               ylim=(0, 1))
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rows_figure(table: pd.DataFrame) -> Figure:
    """Every row of the ablation table: its mIoU and 95% bootstrap interval."""
    labels = table["row"].tolist()
    fig = Figure(figsize=(7, 0.9 + 0.32 * len(labels)))
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    miou = table["miou"].to_numpy(float)
    err = np.stack([miou - table["miou_low"].to_numpy(float), table["miou_high"].to_numpy(float) - miou])
    colours = ["tab:blue" if r.startswith("main") else "tab:green" if r.startswith("deployed")
               else "tab:orange" for r in labels]
    ax.errorbar(miou, y, xerr=np.clip(err, 0, None), fmt="none", ecolor="grey", capsize=3)
    ax.scatter(miou, y, c=colours, zorder=3)
    for yy, value in zip(y, miou):
        ax.annotate(f"{value:.3f}", (value, yy), xytext=(6, 3), textcoords="offset points", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("val mIoU (95% interval, bootstrap over images)")
    ax.set_title("ablation table: strategies (blue), variants (orange), deployed formats (green)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def per_class_figure(names: Sequence[str], iou: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 0.8 + 0.25 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.barh(y, np.nan_to_num(iou), color="tab:blue")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU (validation split)")
    ax.set_title("per-class IoU of the main model")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def sample_figure(image: np.ndarray, label: np.ndarray, predictions: dict[str, np.ndarray],
                  classes: ClassList) -> Figure:
    """One validation image: the image, its ground truth and each model's prediction, in the
    dataset's colours, with a legend of the classes that appear."""
    panels = {"image": image, "ground truth": colorize(label, classes.palette)}
    panels |= {name: colorize(pred, classes.palette) for name, pred in predictions.items()}
    fig = Figure(figsize=(2.1 * len(panels) + 1.8, 2.5))
    axes = fig.subplots(1, len(panels))
    for ax, (title, picture) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    shown = sorted({int(v) for a in (label, *predictions.values()) for v in np.unique(a)
                    if v < len(classes)})
    handles = [Patch(color=np.array(classes.palette[c]) / 255, label=classes.names[c]) for c in shown]
    handles.append(Patch(color=(224 / 255, 224 / 255, 192 / 255), label="not labeled"))
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.01, right=1 - 1.7 / fig.get_figwidth(), wspace=0.05)
    return fig


def reliability_figure(before: Any, after: Any, temperature: float) -> Figure:
    """Reliability diagrams before and after temperature scaling: accuracy and mean confidence
    per confidence bin against the diagonal, with each bin's share of pixels and the ECE."""
    fig = Figure(figsize=(8, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, table) in zip(axes, (("before (T = 1)", before),
                                         (f"after (T = {temperature:.2f})", after))):
        bins = len(table.counts)
        centres = (np.arange(bins) + 0.5) / bins
        shown = table.counts > 0
        ax.bar(centres[shown], table.accuracy[shown], width=1 / bins, edgecolor="black",
               color="tab:blue", alpha=0.8, label="accuracy")
        ax.hlines(table.confidence[shown], centres[shown] - 0.5 / bins, centres[shown] + 0.5 / bins,
                  color="tab:red", lw=2, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        share = table.counts / max(table.counts.sum(), 1)
        ax.step(np.arange(bins + 1) / bins, np.append(share, share[-1]), where="post",
                color="tab:gray", lw=1, label="share of pixels")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_title(f"{title}: ECE {table.ece:.4f}", fontsize=9)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("reliability on the validation split", fontsize=10)
    fig.tight_layout()
    return fig
