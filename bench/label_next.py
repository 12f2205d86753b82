"""Which images to label next, measured: does ranking an unlabeled pool by the model's
uncertainty find the images it lacks, and does labelling them beat labelling as many at
random?

    python bench/label_next.py --seeds 0 1 2 --out bench/results/label_next

A generated profile (6 classes, the generator's scenes): the training split holds ordinary
scenes only; the unlabeled pool and the validation split mix ordinary scenes with a new kind
the training split lacks (the same scenes under heavy sensor noise, `scene.NOVEL_NOISE`).
Per seed:
1. train a model on the training split (the default network and finetune settings of
   params.yaml, fewer iterations);
2. rank the pool by each score (mean pixel entropy; share of pixels below 0.5) and measure the
   precision of the top K (the share of new-kind images among them; K = the number of
   new-kind images in the pool; a random pick's expected precision is their share of the pool);
3. from the trained model, train on with the top K by entropy labelled, or with K random pool
   images labelled (the same iterations and seed), and compare the validation mIoU, overall
   and on the new kind.
The table gives each number per seed, its mean and spread (max - min); a difference is called
a gain only when every seed's top-K result exceeds every seed's random-K result and the mean
difference exceeds the spread of both arms.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deeplab.core.config import load_params
from deeplab.core.io import save_image
from deeplab.data.classes import ClassList
from deeplab.data.dataset import SegmentationDataset
from deeplab.engine.init import build_model
from deeplab.engine.loop import TrainOptions, seed_everything, train
from deeplab.evaluation.evaluate import evaluate
from deeplab.model.inference import ModelRunner
from deeplab.prepare.synthetic.scene import render_scene, save_jpeg, semantic_label
from deeplab.uncertainty.ranking import SCORES, rank_pool

CLASSES = ClassList(("background", "ellipse", "rectangle", "triangle", "star", "cross"),
                    ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)))


def split(folder: Path, name: str, count: int, novel: int, size: int, seed: int) -> pd.DataFrame:
    """`count` scenes with masks, the first `novel` of the new kind; a split list."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(count):
        img, instances = render_scene(rng, size, len(CLASSES), novel=k < novel)
        image_path, mask_path = folder / f"{name}_{k:04d}.jpg", folder / f"{name}_{k:04d}.png"
        save_jpeg(image_path, img)
        save_image(mask_path, Image.fromarray(semantic_label(instances, size)), format="PNG")
        rows.append({"id": f"{name}_{k:04d}", "image": str(image_path), "mask": str(mask_path),
                     "novel": k < novel})
    return pd.DataFrame(rows)


def fit(model: torch.nn.Module, rows: pd.DataFrame, iterations: int, seed: int, ckpt: Path) -> float:
    """Train `model` on `rows` (the finetune schedule of params.yaml, `iterations` long)."""
    params = load_params("params.yaml", sections=("train", "runtime", "finetune"))
    sched = params.finetune.replace(iterations=iterations, val_every=0, checkpoint_every=iterations)
    fill = tuple(int(round(255 * float(m))) for m in model.mean.flatten())
    data = SegmentationDataset(rows, sched.crop_size, sched.scale_range, sched.flip, fill=fill)
    start = time.perf_counter()
    train(model, data, sched, params.train, params.runtime.replace(workers=0),
          TrainOptions(ckpt, seed, {"bench": "label_next"}, torch.device("cpu")))
    return time.perf_counter() - start


def miou(model: torch.nn.Module, rows: pd.DataFrame) -> float:
    return round(float(evaluate(model, rows, len(CLASSES), torch.device("cpu"))["miou"]), 4)


def run_seed(data: dict[str, pd.DataFrame], seed: int, k: int, base_iters: int, more_iters: int,
             tmp: Path) -> dict:
    params = load_params("params.yaml", sections=("model",))
    seed_everything(seed)
    base = build_model(params.model, len(CLASSES))
    seconds = fit(base, data["train"], base_iters, seed, tmp / f"base-{seed}.ckpt")
    pool, val = data["pool"], data["val"]
    novel_val = val[val["novel"]]
    out = {"seed": seed, "base_miou": miou(base, val), "base_novel_miou": miou(base, novel_val)}
    runner = ModelRunner(base.eval())
    is_novel = dict(zip(pool["image"], pool["novel"]))
    rankings = {}
    for score in SCORES:
        table = rank_pool(runner, pool["image"].tolist(), CLASSES, score)
        rankings[score] = table
        out[f"precision_at_k_{score}"] = round(float(np.mean([is_novel[p] for p in
                                                               table["image"].head(k)])), 4)
    picks = {"top_k": set(rankings["entropy"]["image"].head(k)),
             "random_k": set(pool.sample(k, random_state=seed)["image"])}
    out["precision_at_k_random"] = round(float(np.mean([is_novel[p] for p in picks["random_k"]])), 4)
    for arm, chosen in picks.items():
        model = copy.deepcopy(base)
        rows = pd.concat([data["train"], pool[pool["image"].isin(chosen)]], ignore_index=True)
        seed_everything(seed)
        seconds += fit(model.train(), rows, more_iters, seed, tmp / f"{arm}-{seed}.ckpt")
        out[f"{arm}_miou"], out[f"{arm}_novel_miou"] = miou(model, val), miou(model, novel_val)
    out["seconds"] = round(seconds, 1)
    return out


def summary(runs: list[dict]) -> list[dict]:
    keys = [k for k in runs[0] if k not in ("seed", "seconds")]
    lines = []
    for key in keys:
        values = [r[key] for r in runs]
        lines.append({"measure": key, "per_seed": values, "mean": round(statistics.mean(values), 4),
                      "spread": round(max(values) - min(values), 4)})
    by = {line["measure"]: line for line in lines}
    for what in ("miou", "novel_miou"):
        top, rnd = by[f"top_k_{what}"], by[f"random_k_{what}"]
        gain = round(top["mean"] - rnd["mean"], 4)
        lines.append({"measure": f"gain_{what} (top_k - random_k)", "per_seed":
                      [round(a - b, 4) for a, b in zip(top["per_seed"], rnd["per_seed"])],
                      "mean": gain, "spread": None,
                      "beats_spread": bool(gain > max(top["spread"], rnd["spread"])
                                           and min(top["per_seed"]) > max(rnd["per_seed"]))})
    return lines


def markdown(lines: list[dict], meta: dict) -> str:
    text = [f"{k}: {v}" for k, v in meta.items()] + [
        "", "| measure | per seed | mean | spread | beats the spread |", "|---|---|---|---|---|"]
    for r in lines:
        text.append(f"| {r['measure']} | {r['per_seed']} | {r['mean']} | "
                    f"{'' if r['spread'] is None else r['spread']} | {r.get('beats_spread', '')} |")
    return "\n".join(text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=60)
    ap.add_argument("--pool-images", type=int, default=60)
    ap.add_argument("--pool-novel", type=int, default=12, help="new-kind images in the pool (= K)")
    ap.add_argument("--val-images", type=int, default=40, help="half of them of the new kind")
    ap.add_argument("--base-iterations", type=int, default=300)
    ap.add_argument("--more-iterations", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k = args.pool_novel
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = {"train": split(folder, "train", args.train_images, 0, args.size, 100),
                "pool": split(folder, "pool", args.pool_images, k, args.size, 200),
                "val": split(folder, "val", args.val_images, args.val_images // 2, args.size, 300)}
        runs = []
        for seed in args.seeds:
            runs.append(run_seed(data, seed, k, args.base_iterations, args.more_iterations, folder))
            print(json.dumps(runs[-1]), flush=True)
    meta = {"command": " ".join(["python", "bench/label_next.py", *sys.argv[1:]]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "K": k, "pool": f"{args.pool_images} images, {k} of the new kind (random pick: "
                            f"{k / args.pool_images:.2f} precision expected)",
            "val": f"{args.val_images} images, {args.val_images // 2} of the new kind"}
    lines = summary(runs)
    print(markdown(lines, meta))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs,
                                                             "summary": lines}, indent=2))
        args.out.with_suffix(".md").write_text(markdown(lines, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
