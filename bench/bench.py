"""Training-step and inference speed and peak memory: our DeepLabV3+ against its peers.

    python bench/bench.py --device cpu --size 512 --batch 2 --threads 2 --out bench/results/cpu
    python bench/bench.py --device cuda --precisions fp32 bf16-cl bf16-cl-compile --out bench/results/h100
    python bench/bench.py --device cpu --precisions fp32 bf16 bf16-cl --size 129 --threads 2 \
        --configs ours-mnv2-os16-dec-sc-64 ours-r101-os16-dec-sc --out bench/results/train_precision_cpu
    python bench/bench.py --loader        # data pipeline vs training step (params.yaml settings)
    python bench/bench.py --preprocess 1 2 --size 480 --images 300   # COCO -> masks, by workers
    python bench/bench.py --signature 20000 --file-bytes 160000   # fetch's content signature

Each configuration runs in its own process (clean peak-memory numbers): warm-up steps, then
`--repeats` timed steps; `--rounds` repeats the sweep with the configurations interleaved
(on a shared machine speed drifts by ~10% over minutes); the table gives medians. A training step is forward + cross-entropy
+ backward + SGD step at `--batch`; inference is a forward pass in eval mode under
`torch.inference_mode`. Peers: torchvision's DeepLabV3 ResNet-101 (OS 8, no decoder) and
segmentation-models-pytorch's DeepLabV3Plus ResNet-101 (OS 16, separable ASPP + decoder;
`pip install -r bench/requirements.txt`). Ratios compare each of ours with the peer of
the same architecture.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deeplab.core.choices.backbones import BACKBONES, OUTPUT_STRIDES

# name -> (kind, settings); "peer" names the peer with the same architecture.
# "mg1" = no multi-grid (`multi_grid=None`: the plain atrous convention, which equals
# torchvision's replace_stride_with_dilation, tested): the same-architecture comparisons with
# the peers; the default multi-grid (1, 2, 4) dilates the last block's convs further.
CONFIGS: dict[str, dict] = {
    "ours-r101-os16-dec-sc": dict(backbone="resnet101", os=16, decoder=True, separable=True),
    "ours-r101-os16-dec-sc-mg1": dict(backbone="resnet101", os=16, decoder=True, separable=True,
                                      multi_grid=None, peer="smp-r101-os16-dec-sc"),
    "ours-r101-os16-dec": dict(backbone="resnet101", os=16, decoder=True, separable=False),
    "ours-r101-os16": dict(backbone="resnet101", os=16, decoder=False, separable=False),
    "ours-r101-os8": dict(backbone="resnet101", os=8, decoder=False, separable=False),
    "ours-r101-os8-mg1": dict(backbone="resnet101", os=8, decoder=False, separable=False,
                              multi_grid=None, peer="tv-deeplabv3-r101-os8"),
    "ours-r101-os8-dec-sc": dict(backbone="resnet101", os=8, decoder=True, separable=True),
    "ours-x65-os16-dec-sc": dict(backbone="xception65", os=16, decoder=True, separable=True),
    "ours-x65-os8-dec-sc": dict(backbone="xception65", os=8, decoder=True, separable=True),
    # the default profile's network (params.yaml: 64-channel heads)
    "ours-mnv2-os16-dec-sc-64": dict(backbone="mobilenet_v2", os=16, decoder=True, separable=True,
                                     aspp_channels=64, decoder_channels=64),
    "tv-deeplabv3-r101-os8": dict(peer_lib="torchvision"),
    "smp-r101-os16-dec-sc": dict(peer_lib="smp"),
}
DEFAULT = ["ours-r101-os16-dec-sc", "ours-r101-os16-dec-sc-mg1", "ours-r101-os16-dec",
           "ours-r101-os8", "ours-r101-os8-mg1", "ours-x65-os16-dec-sc", "ours-x65-os8-dec-sc",
           "tv-deeplabv3-r101-os8", "smp-r101-os16-dec-sc"]
PRECISIONS = ("fp32", "bf16", "bf16-cl", "bf16-cl-compile")
for _name, _cfg in CONFIGS.items():  # our rows use only settings the network defines
    if "peer_lib" not in _cfg:
        assert _cfg["backbone"] in BACKBONES and _cfg["os"] in OUTPUT_STRIDES, _name


def build(name: str, num_classes: int = 21) -> torch.nn.Module:
    cfg = CONFIGS[name]
    if cfg.get("peer_lib") == "torchvision":
        from torchvision.models.segmentation import deeplabv3_resnet101

        net = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=num_classes,
                                  aux_loss=False)
        return _OutOnly(net)
    if cfg.get("peer_lib") == "smp":
        import segmentation_models_pytorch as smp

        return smp.DeepLabV3Plus("resnet101", encoder_weights=None, encoder_output_stride=16,
                                 decoder_atrous_rates=(6, 12, 18), classes=num_classes)
    from deeplab.model import DeepLabV3Plus

    heads = {k: cfg[k] for k in ("aspp_channels", "decoder_channels") if k in cfg}
    return DeepLabV3Plus(num_classes, cfg["backbone"], cfg["os"], decoder=cfg["decoder"],
                         separable=cfg["separable"], multi_grid=cfg.get("multi_grid", (1, 2, 4)),
                         **heads)


class _OutOnly(torch.nn.Module):
    """torchvision's segmentation models return a dict; keep the logits."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def run_one(name: str, device: torch.device, size: int, batch: int, precision: str,
            warmup: int, repeats: int) -> dict:
    """Time one configuration in this process; return medians and peak memory."""
    torch.manual_seed(0)
    model = build(name).to(device)
    channels_last = "cl" in precision
    amp = torch.bfloat16 if precision.startswith("bf16") else None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if "compile" in precision else model
    x = torch.rand(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, size, size), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)

    def train_step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = step_model(x)
            loss = F.cross_entropy(out.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            step_model(x[:1])

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    train_times = _timed(train_step, device, warmup, repeats)
    train_mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    infer_times = _timed(infer, device, warmup, repeats)
    infer_mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    train_s, infer_s = statistics.median(train_times), statistics.median(infer_times)
    return {"config": name, "precision": precision, "size": size, "batch": batch,
            "train_img_s": round(batch / train_s, 3), "train_step_ms": round(train_s * 1e3, 1),
            "infer_latency_ms": round(infer_s * 1e3, 1), "infer_img_s": round(1 / infer_s, 3),
            "peak_mem_gib": round((train_mem if train_mem is not None else rss) / 2**30, 2),
            "infer_peak_mem_gib": round(infer_mem / 2**30, 2) if infer_mem is not None else None,
            "memory": "cuda max allocated" if device.type == "cuda" else "process peak RSS"}


def loader_throughput(params_file: str, seconds: float) -> dict:
    """Images/s of the training loader (params.yaml workers, crop, batch) against the
    training step's consumption at the same settings, on the processed finetune list."""
    from torch.utils.data import DataLoader

    from deeplab.core.config import load_params
    from deeplab.data.dataset import IterationSampler, SegmentationDataset, read_list
    from deeplab.engine.init import build_model

    params = load_params(params_file)
    sched, runtime = params.finetune, params.runtime
    rows = read_list("data/processed/train.csv")
    dataset = SegmentationDataset(rows, sched.crop_size, sched.scale_range, sched.flip)
    sampler = IterationSampler(len(dataset), sched.batch_size, 10_000, 0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=runtime.workers)
    seen, t0 = 0, None
    for k, (images, _) in enumerate(loader):
        if k == 2:
            t0, seen = time.perf_counter(), 0
        seen += images.shape[0]
        if t0 and time.perf_counter() - t0 > seconds:
            break
    loader_rate = seen / (time.perf_counter() - t0)
    from deeplab.data.classes import read_classes

    classes = len(read_classes("data/processed/classes.json"))
    model = build_model(params.model, classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    crop, batch = sched.crop_size, sched.batch_size
    x, y = torch.rand(batch, 3, crop, crop), torch.randint(0, classes, (batch, crop, crop))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step_s = statistics.median(_timed(step, torch.device("cpu"), 3, 10))
    return {"loader_workers": runtime.workers, "loader_img_s": round(loader_rate, 1),
            "train_step_img_s": round(batch / step_s, 1),
            "training_waits_on_data": bool(loader_rate < batch / step_s)}


def _median_row(rows: list[dict]) -> dict:
    """Medians over rounds of every numeric field."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float):
            out[key] = round(statistics.median(r[key] for r in rows), 3)
    out["rounds"] = len(rows)
    return out


def markdown(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    return df.to_markdown(index=False)


def add_ratios(rows: list[dict]) -> None:
    """`train_vs_peer` / `infer_vs_peer`: our speed / the same-architecture peer's (>1 = faster)."""
    by_key = {(r["config"], r["precision"]): r for r in rows}
    for r in rows:
        peer = CONFIGS[r["config"]].get("peer")
        p = by_key.get((peer, r["precision"]))
        if p:
            r["peer"] = peer
            r["train_vs_peer"] = round(r["train_img_s"] / p["train_img_s"], 3)
            r["infer_vs_peer"] = round(r["infer_img_s"] / p["infer_img_s"], 3)


def preprocess_throughput(size: int, images: int, workers: list[int]) -> dict:
    """Images/s of COCO -> 21-class mask conversion (pycocotools decoding, checks, palette PNG
    writing) for each number of worker processes, on synthetic COCO-style data at `size`."""
    import tempfile

    from deeplab.core.schema import SyntheticData
    from deeplab.data.classes import VOC_CLASSES, ClassList, voc_palette
    from deeplab.prepare.preprocess import Job, SampleGuard, process_coco
    from deeplab.prepare.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "raw", SyntheticData(seed=0, image_size=size, coco_train_images=images,
                                             coco_val_images=1, train_images=1, val_images=1,
                                             sbd_images=0))
        classes = ClassList(VOC_CLASSES, voc_palette(len(VOC_CLASSES)))
        rates = {}
        for n in workers:
            out = root / f"out{n}"
            start = time.perf_counter()
            split = process_coco(root / "raw/coco", "train", Job(out, classes), None,
                                 SampleGuard("error"), n, out)
            rates[n] = round((len(split.rows) + split.dropped) / (time.perf_counter() - start), 1)
    return {"image_size": size, "images": images, "img_per_s_by_workers": rates}


def signature_speed(files: int, size: int = 4096) -> dict:
    """Seconds of fetch's content signature over `files` files of `size` bytes: the first look
    (every file hashed) and a no-op look (the cache answers: one `stat` per file)."""
    import tempfile

    from deeplab.prepare.signature import tree_signature

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        rng = __import__("random").Random(0)
        for k in range(files):
            folder = root / f"{k // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{k:06d}.jpg").write_bytes(rng.randbytes(size))
        cache = Path(tmp) / "cache.json"
        timings = {}
        for look in ("first", "no_op", "no_op_again"):
            start = time.perf_counter()
            signature = tree_signature([str(root)], cache)
            timings[look] = round(time.perf_counter() - start, 2)
    return {"files": files, "bytes_per_file": size, "seconds": timings, "signature": signature[:16]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--configs", nargs="+", default=DEFAULT, choices=list(CONFIGS))
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    ap.add_argument("--size", type=int, default=512,
                    help="input side; smp needs a multiple of 16, so 512 rather than 513")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep, interleaved")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    ap.add_argument("--loader", action="store_true", help="data pipeline vs training step instead")
    ap.add_argument("--loader-seconds", type=float, default=10.0)
    ap.add_argument("--preprocess", type=int, nargs="+", metavar="WORKERS",
                    help="COCO conversion img/s for these worker counts instead (--size, --images)")
    ap.add_argument("--images", type=int, default=300, help="images for --preprocess")
    ap.add_argument("--signature", type=int, metavar="FILES", default=0,
                    help="time fetch's content signature over this many files instead")
    ap.add_argument("--file-bytes", type=int, default=4096, help="file size for --signature")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config in this process
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.one:
        print(json.dumps(run_one(args.one, device, args.size, args.batch, args.precisions[0],
                                 args.warmup, args.repeats)))
        return 0
    if args.loader or args.preprocess or args.signature:
        result = (preprocess_throughput(args.size, args.images, args.preprocess) if args.preprocess
                  else signature_speed(args.signature, args.file_bytes) if args.signature
                  else loader_throughput("params.yaml", args.loader_seconds))
        print(json.dumps(result))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        return 0
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):  # rounds interleave the configs: slow drifts hit all alike
        for precision in args.precisions:
            for name in args.configs:
                cmd = [sys.executable, __file__, "--one", name, "--device", device.type,
                       "--precisions", precision, "--size", str(args.size), "--batch",
                       str(args.batch), "--threads", str(args.threads), "--warmup",
                       str(args.warmup), "--repeats", str(args.repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{name} {precision}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault((name, precision), []).append(row)
                print(json.dumps(row), flush=True)
    rows = [_median_row(r) for r in runs.values()]
    add_ratios(rows)
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "command": " ".join(sys.argv)}
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        args.out.with_suffix(".md").write_text(
            "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
