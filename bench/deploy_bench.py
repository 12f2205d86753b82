"""Served-model speed on CPU: our runtimes and precisions against the peers, batch 1.

    python bench/deploy_bench.py --backbones resnet101 mobilenet_v2 --threads 1 2 --size 512 \
        --out bench/results/deploy

Rows per backbone (DeepLabV3+, OS 16, decoder + separable convs): ours eager fp32 and bf16 +
channels_last (torch), ONNX Runtime fp32 and int8 (static QDQ), OpenVINO fp32, bf16 and int8;
the peers segmentation-models-pytorch DeepLabV3Plus (ResNet-101, fp32 eager) and torchvision
DeepLabV3 (ResNet-101 OS 8, MobileNetV3 for the light row; no decoder). Every row runs the same
uint8 512 x 512 image; the rows are interleaved over `--rounds` and the table gives medians.
The fp32 and bf16 matmul peaks (torch.mm of 2048 x 2048, the same threads) are measured in the
same run, and each row's fraction of its precision's peak is given from the model's
multiply-adds. The CPU model and flags are recorded. Random weights (speed does not depend
on them); int8 is calibrated on random crops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deeplab.model import DeepLabV3Plus
from deeplab.report.madds import count_madds
from deeplab.serving.onnx_files import export_onnx
from deeplab.serving.quantize import quantize_int8
from deeplab.serving.runtimes import (
    OnnxRuntimeRunner,
    OpenVinoRunner,
    TorchRunner,
    cpu_bf16,
)
from deeplab.serving.segmenter import Segmenter

OURS = ["torch/fp32", "torch/bf16", "onnxruntime/fp32", "onnxruntime/int8", "openvino/fp32",
        "openvino/bf16", "openvino/int8"]


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    wanted = [f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))]
    return {"model": model, "flags": sorted(wanted), "bf16_native": cpu_bf16(),
            "cores": os.cpu_count()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Multiply-adds per second of torch.mm at `dtype` (the peak a row is compared with)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return count * n ** 3 / (time.perf_counter() - start)


def peers(backbone: str) -> dict[str, torch.nn.Module]:
    import torchvision

    out = {}
    if backbone == "resnet101":
        try:
            import segmentation_models_pytorch as smp

            out["smp/fp32"] = smp.DeepLabV3Plus("resnet101", encoder_weights=None, classes=21,
                                                encoder_output_stride=16)
        except ImportError:
            pass
        out["torchvision/fp32"] = torchvision.models.segmentation.deeplabv3_resnet101(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    else:
        out["torchvision/fp32"] = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    return {k: m.eval() for k, m in out.items()}


def runners(backbone: str, folder: Path, threads: int) -> dict:
    torch.manual_seed(0)
    net = DeepLabV3Plus(21, backbone, 16, decoder=True, separable=True).eval()
    seg = Segmenter(net).eval()
    fp32, int8 = folder / f"{backbone}.onnx", folder / f"{backbone}.int8.onnx"
    if not fp32.exists():
        export_onnx(seg, fp32)
        rng = np.random.default_rng(0)
        quantize_int8(fp32, int8, [rng.integers(0, 256, (1, 257, 257, 3), dtype=np.uint8)
                                   for _ in range(8)])
    out = {}
    for fmt in OURS:
        runtime, precision = fmt.split("/")
        if precision == "bf16" and not cpu_bf16():
            continue
        if runtime == "torch":
            out[fmt] = TorchRunner(Segmenter(net).eval(), precision, torch.device("cpu")).labels
        else:
            cls = OnnxRuntimeRunner if runtime == "onnxruntime" else OpenVinoRunner
            out[fmt] = cls(int8 if precision == "int8" else fp32, precision, threads).labels
    for name, model in peers(backbone).items():
        def run(images, model=model):
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
            with torch.inference_mode():
                y = model(x)
            return (y["out"] if isinstance(y, dict) else y).argmax(1)
        out[name] = run
    return out, count_madds(net, (512, 512))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet101", "mobilenet_v2"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    image = np.random.default_rng(1).integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            torch.set_num_threads(threads)
            peaks[threads] = {"fp32": matmul_peak(torch.float32),
                              "bf16": matmul_peak(torch.bfloat16)}
            for backbone in args.backbones:
                fns, madds = runners(backbone, Path(tmp), threads)
                times: dict[str, list[float]] = {k: [] for k in fns}
                for _ in range(args.rounds):
                    for name, fn in fns.items():  # interleaved
                        fn(image)  # warm-up
                        for _ in range(args.repeats):
                            start = time.perf_counter()
                            fn(image)
                            times[name].append(time.perf_counter() - start)
                base = statistics.median(times["torch/fp32"])
                smp = statistics.median(times["smp/fp32"]) if "smp/fp32" in times else None
                for name, ts in times.items():
                    ms = 1000 * statistics.median(ts)
                    precision = name.split("/")[1]
                    peak = peaks[threads]["bf16" if precision in ("bf16", "int8") else "fp32"]
                    row = {"backbone": backbone, "threads": threads, "row": name,
                           "ms": round(ms, 1), "vs_ours_fp32": round(base * 1000 / ms, 2),
                           "vs_smp_fp32": round(smp * 1000 / ms, 2) if smp else None,
                           "peak_fraction": None if name.split("/")[0] in ("smp", "torchvision")
                           else round(madds / (ms / 1000) / peak, 3)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"cpu": cpu_info(), "size": args.size, "batch": 1,
              "matmul_peak_gmacs": {t: {k: round(v / 1e9, 1) for k, v in p.items()} for t, p in peaks.items()},
              "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        head = "| backbone | threads | row | ms/image | vs ours fp32 | vs smp fp32 | of peak |\n|---|---|---|---|---|---|---|\n"
        body = "".join(f"| {r['backbone']} | {r['threads']} | {r['row']} | {r['ms']} | {r['vs_ours_fp32']}x | "
                       f"{'' if r['vs_smp_fp32'] is None else str(r['vs_smp_fp32']) + 'x'} | "
                       f"{'' if r['peak_fraction'] is None else r['peak_fraction']} |\n" for r in rows)
        info = result["cpu"]
        args.out.with_suffix(".md").write_text(
            f"CPU: {info['model']}, {info['cores']} cores; bf16 native: {info['bf16_native']}; flags: "
            f"{' '.join(info['flags'])}\n\nmatmul peak (GMAC/s): {result['matmul_peak_gmacs']}\n\n" + head + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
