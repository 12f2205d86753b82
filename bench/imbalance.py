"""Losses for a rare class, measured: an imbalanced profile from the generator (a folder
dataset of background, crack and rust where cracks are drawn at a quarter of the usual size,
about 0.6% of the pixels), trained from scratch with each loss setting over several seeds.

    python bench/imbalance.py --seeds 0 1 2 --out bench/results/imbalance

Every run uses the default profile's network and finetune schedule (params.yaml) with only
the loss settings changed; the table gives the crack IoU and the mIoU on the validation
split per seed, their mean and spread (max - min), and which settings beat plain
cross-entropy on every seed by more than its spread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from deeplab.core.config import load_params
from deeplab.core.schema import PreprocessConfig, SyntheticData
from deeplab.data.classes import ClassList
from deeplab.data.dataset import SegmentationDataset, read_list, repeat_rows
from deeplab.engine.init import build_model
from deeplab.engine.loop import TrainOptions, seed_everything, train
from deeplab.engine.losses import class_weights
from deeplab.evaluation.evaluate import evaluate
from deeplab.prepare.preprocess import preprocess
from deeplab.prepare.synthetic import generate

CLASSES = ClassList(("background", "crack", "rust"), ((0, 0, 0), (255, 0, 0), (255, 160, 0)))
RARE = "crack"
SETTINGS = {  # name -> schedule changes
    "ce": {},
    "ohem": {"loss": "ohem", "top_k_percent_pixels": 0.2, "hard_example_mining_step": 250},
    "ce+inverse_frequency": {"class_weights": "inverse_frequency"},
    "ce+dice": {"loss": "ce+dice"},
}


def dataset(root: Path, size: int, train_images: int, val_images: int, scale: float) -> Path:
    cfg = SyntheticData(seed=0, image_size=size, coco_train_images=0, coco_val_images=0,
                        train_images=train_images, val_images=val_images, sbd_images=0,
                        rare={"name": RARE, "scale": scale})
    generate(root / "raw", cfg, "folder", CLASSES)
    manifest = {"layout": "folder", "root": str(root / "raw" / "folder"), "coco_root": None,
                "sbd_root": None, "classes": CLASSES.as_dict()}
    preprocess(manifest, root / "processed", PreprocessConfig(
        min_pixels=0, hard_classes=[RARE], on_bad_sample="error", workers=1))
    return root / "processed"


def run(processed: Path, name: str, seed: int, iterations: int, tmp: Path) -> dict:
    params = load_params("params.yaml", sections=("model", "train", "runtime", "finetune"))
    sched = params.finetune.replace(iterations=iterations, val_every=0, **SETTINGS[name])
    stats = pd.read_csv(processed / "class_stats.csv")
    pixels = stats[stats["split"] == "train"].sort_values("class_id")["pixels"].tolist()
    seed_everything(seed)
    model = build_model(params.model, len(CLASSES))
    fill = tuple(int(round(255 * float(m))) for m in model.mean.flatten())
    rows = read_list(processed / "train.csv")
    hard = (processed / "hard_images.txt").read_text().split()
    data = SegmentationDataset(repeat_rows(rows, hard, sched.bootstrap_factor), sched.crop_size,
                               sched.scale_range, sched.flip, fill=fill)
    start = time.perf_counter()
    train(model, data, sched, params.train, params.runtime.replace(workers=0),
          TrainOptions(tmp / f"{name}-{seed}.ckpt", seed, {"bench": name}, torch.device("cpu"),
                       class_weights=class_weights(sched.class_weights, pixels)))
    result = evaluate(model, read_list(processed / "val.csv"), len(CLASSES), torch.device("cpu"))
    return {"setting": name, "seed": seed, "miou": round(float(result["miou"]), 4),
            "rare_iou": round(float(result["iou"][CLASSES.names.index(RARE)]), 4),
            "seconds": round(time.perf_counter() - start, 1)}


def summary(rows: list[dict]) -> list[dict]:
    out = []
    base = [r for r in rows if r["setting"] == "ce"]
    for name in SETTINGS:
        mine = [r for r in rows if r["setting"] == name]
        line = {"setting": name}
        for key in ("rare_iou", "miou"):
            values = [r[key] for r in mine]
            ce = [r[key] for r in base]
            spread = max(ce) - min(ce)
            line |= {f"{key}_per_seed": values, f"{key}_mean": round(statistics.mean(values), 4),
                     f"{key}_spread": round(max(values) - min(values), 4),
                     f"{key}_beats_ce": name != "ce" and min(values) > max(ce) and
                     statistics.mean(values) - statistics.mean(ce) > spread}
        out.append(line)
    return out


def markdown(lines: list[dict], meta: dict) -> str:
    text = [f"{k}: {v}" for k, v in meta.items()] + [
        "", "| setting | crack IoU per seed | mean | spread | mIoU per seed | mean | spread | beats ce (crack / mIoU) |",
        "|---|---|---|---|---|---|---|---|"]
    for r in lines:
        text.append(f"| {r['setting']} | {r['rare_iou_per_seed']} | {r['rare_iou_mean']} | "
                    f"{r['rare_iou_spread']} | {r['miou_per_seed']} | {r['miou_mean']} | "
                    f"{r['miou_spread']} | {r['rare_iou_beats_ce']} / {r['miou_beats_ce']} |")
    return "\n".join(text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--iterations", type=int, default=500, help="finetune iterations per run")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--train-images", type=int, default=120)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--scale", type=float, default=0.25, help="the rare class's object size factor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        processed = dataset(Path(tmp), args.size, args.train_images, args.val_images, args.scale)
        stats = pd.read_csv(processed / "class_stats.csv")
        train_px = stats[stats["split"] == "train"]
        share = float(train_px.loc[train_px["class"] == RARE, "pixels"].iloc[0] / train_px["pixels"].sum())
        for seed in args.seeds:  # interleaved: every setting at each seed before the next
            for name in args.settings:
                rows.append(run(processed, name, seed, args.iterations, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    meta = {"command": " ".join(["python", "bench/imbalance.py", *sys.argv[1:]]),
            "settings": {name: SETTINGS[name] for name in args.settings},
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "rare class share of training pixels": round(share, 5)}
    lines = summary(rows)
    print(markdown(lines, meta))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": rows,
                                                             "summary": lines}, indent=2))
        args.out.with_suffix(".md").write_text(markdown(lines, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
