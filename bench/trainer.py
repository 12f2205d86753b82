"""Trainer options and a timm encoder, measured: the default profile's finetune schedule on the
synthetic VOC data (from scratch: no COCO pretraining, so nothing but the setting differs),
plain against warmup, against an EMA of the weights, and MobileNetV2 against a timm encoder,
over several seeds.

    python bench/trainer.py --seeds 0 1 2 --out bench/results/trainer

The table gives the validation mIoU per seed, the mean and spread (max - min), whether the
setting beats plain on every seed by more than plain's spread, and each model's inference
ms per image (the validation split, batch 1, `--threads` threads) and multiply-adds at 513x513.
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

import torch

from deeplab.core.config import load_params
from deeplab.core.schema import PreprocessConfig, SyntheticData
from deeplab.data.classes import ClassList
from deeplab.data.dataset import SegmentationDataset, read_list, repeat_rows
from deeplab.engine.init import build_model
from deeplab.engine.loop import TrainOptions, seed_everything, train
from deeplab.evaluation.evaluate import evaluate
from deeplab.model.device import cpu_name
from deeplab.prepare.preprocess import preprocess
from deeplab.prepare.synthetic import generate
from deeplab.report.madds import count_madds

SETTINGS = {  # name -> (schedule changes, model changes)
    "plain": ({}, {}),
    "warmup": ({"warmup": {"iterations": 0.1, "start_factor": 0.1}}, {}),  # a tenth of the run
    "ema": ({"ema": {"decay": 0.99, "every": 1}, "keep": "ema"}, {}),
    "timm:mobilenetv3_large_100": ({}, {"backbone": "timm:mobilenetv3_large_100"}),
}


def dataset(root: Path, size: int, train_images: int, val_images: int) -> tuple[Path, int]:
    cfg = SyntheticData(seed=0, image_size=size, coco_train_images=0, coco_val_images=0,
                        train_images=train_images, val_images=val_images, sbd_images=0)
    generate(root / "raw", cfg)
    classes = ClassList.default(21)
    manifest = {"layout": "voc", "root": str(root / "raw" / "VOC2012"), "coco_root": None,
                "sbd_root": None, "classes": classes.as_dict()}
    preprocess(manifest, root / "processed", PreprocessConfig(
        min_pixels=0, hard_classes=None, on_bad_sample="error", workers=1))
    return root / "processed", len(classes)


def run(processed: Path, classes: int, name: str, seed: int, iterations: int, tmp: Path) -> dict:
    params = load_params("params.yaml", sections=("model", "train", "runtime", "finetune"))
    schedule, model_changes = SETTINGS[name]
    if "warmup" in schedule:  # its length: a share of the run's iterations
        share = schedule["warmup"]["iterations"]
        schedule = {**schedule, "warmup": {**schedule["warmup"],
                                           "iterations": max(1, int(share * iterations))}}
    sched = params.finetune.replace(iterations=iterations, val_every=0, **schedule)
    seed_everything(seed)
    model = build_model(params.model.replace(**model_changes), classes)
    fill = tuple(int(round(255 * float(m))) for m in model.mean.flatten())
    rows = read_list(processed / "train.csv")
    hard = (processed / "hard_images.txt").read_text().split()
    data = SegmentationDataset(repeat_rows(rows, hard, sched.bootstrap_factor), sched.crop_size,
                               sched.scale_range, sched.flip, fill=fill)
    start = time.perf_counter()
    result = train(model, data, sched, params.train, params.runtime.replace(workers=0),
                   TrainOptions(tmp / f"{name}-{seed}.ckpt".replace(":", "_"), seed,
                                {"bench": name}, torch.device("cpu")))
    seconds = time.perf_counter() - start
    if result.ema is not None:  # keep: ema - the averaged weights are the model
        model.load_state_dict(result.ema.weights())
    scored = evaluate(model.eval(), read_list(processed / "val.csv"), classes, torch.device("cpu"))
    return {"setting": name, "seed": seed, "miou": round(float(scored["miou"]), 4),
            "train_seconds": round(seconds, 1),
            "ms_per_image": round(1000 * float(scored["seconds_per_image"]), 2),
            "madds_b": round(count_madds(model, (513, 513)) / 1e9, 2)}


def summary(rows: list[dict]) -> list[dict]:
    out = []
    plain = [r["miou"] for r in rows if r["setting"] == "plain"]
    spread = max(plain) - min(plain)
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name]
        values = [r["miou"] for r in mine]
        out.append({"setting": name, "miou_per_seed": values,
                    "miou_mean": round(statistics.mean(values), 4),
                    "miou_spread": round(max(values) - min(values), 4),
                    "beats_plain": name != "plain" and min(values) > max(plain)
                    and statistics.mean(values) - statistics.mean(plain) > spread,
                    "below_plain": name != "plain" and max(values) < min(plain),
                    "ahead_same_seed": f"{sum(v > p for v, p in zip(values, plain))}/{len(values)}",
                    "ms_per_image": statistics.median(r["ms_per_image"] for r in mine),
                    "madds_b": mine[0]["madds_b"]})
    return out


def markdown(lines: list[dict], meta: dict) -> str:
    text = [f"{k}: {v}" for k, v in meta.items()] + [
        "", "| setting | val mIoU per seed | mean | spread | ahead of plain, same seed | "
            "beats plain on every seed | below plain on every seed | ms / image | "
            "GMAdds (513x513) |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in lines:
        text.append(f"| {r['setting']} | {r['miou_per_seed']} | {r['miou_mean']} | "
                    f"{r['miou_spread']} | {r['ahead_same_seed']} | {r['beats_plain']} | "
                    f"{r['below_plain']} | {r['ms_per_image']} | {r['madds_b']} |")
    return "\n".join(text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--iterations", type=int, default=500, help="finetune iterations per run")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--train-images", type=int, default=120)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args()
    if "plain" not in args.settings:
        ap.error("--settings must include plain (the baseline)")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        processed, classes = dataset(Path(tmp), args.size, args.train_images, args.val_images)
        for seed in args.seeds:  # interleaved: every setting at each seed before the next
            for name in args.settings:
                rows.append(run(processed, classes, name, seed, args.iterations, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    meta = {"command": " ".join(["python", "bench/trainer.py", *sys.argv[1:]]),
            "settings": {name: SETTINGS[name] for name in args.settings},
            "machine": f"{cpu_name()}, {platform.machine()}, {torch.get_num_threads()} threads, "
                       f"torch {torch.__version__}"}
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
