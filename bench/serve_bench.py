"""Served latency: the registered model behind a real `mlflow models serve`, on torch fp32 (the
default before `register.serve.runtime: auto`) against `auto` (the fastest deployed format that
evaluate measured within `deploy.max_drop` on this machine).

    python bench/serve_bench.py --requests 30 --size 512 --out bench/results/serve

Both versions are registered by `register` itself, from the pipeline's own files (the
finetuned model, evaluate's metrics, the deploy folder), into a temporary tracking store; each
is served in turn by one worker on 127.0.0.1 and sent the same base64 PNG photos one at a time
(after warm-up requests). The table gives the median and 90th-percentile request latency and
which format each version served.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url}: no answer in {seconds:.0f} s")


def photos(count: int, size: int, seed: int = 0) -> list[bytes]:
    """Request bodies: one generated scene per request, as a base64 PNG table row."""
    from deeplab.prepare.synthetic.scene import render_scene

    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        png = io.BytesIO()
        Image.fromarray(render_scene(rng, size, 3)[0]).save(png, format="PNG")
        row = [base64.b64encode(png.getvalue()).decode()]
        bodies.append(json.dumps({"dataframe_split": {"columns": ["image"], "data": [row]}}).encode())
    return bodies


def register_version(serve: str, store: Path, model: Path, metrics: Path, deployed: Path) -> str:
    """Register the model with `register.serve` at `serve` (`auto` or `runtime/precision`);
    the version's URI."""
    from deeplab.core.config import load_params
    from deeplab.serving.registry import register

    params = load_params("params.yaml")
    runtime, precision = ("auto", "auto") if serve == "auto" else serve.split("/")
    cfg = params.registration
    cfg = cfg.replace(model_name="bench", promote="never",
                      serve=cfg.serve.replace(runtime=runtime, precision=precision))
    params = params.replace(registration=cfg)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    result = register(model, metrics, params, deployed)
    return f"models:/bench/{result['version']}"


def serve_and_time(uri: str, store: Path, bodies: list[bytes], warmup: int) -> dict:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    mlflow = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen([mlflow, "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server)
        url = f"http://127.0.0.1:{port}/invocations"
        for body in bodies[:warmup]:
            post(url, body)
        times = []
        for body in bodies:
            start = time.perf_counter()
            post(url, body)
            times.append(1000 * (time.perf_counter() - start))
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
    log = server.stdout.read() if server.stdout else ""
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(times), 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "requests": len(times), "server_log_tail": log[-500:]}


def served_format(uri: str, store: Path) -> str:
    """The format a version serves first (its `serve.json`)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        serve = json.loads((local / "artifacts/serve.json").read_text())
    order = (serve.get("auto") or {}).get("order")
    return order[0] if order else f"{serve['runtime']}/{serve['precision']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/finetune.pt"))
    ap.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    ap.add_argument("--deployed", type=Path, default=Path("models/deploy"))
    ap.add_argument("--serves", nargs="+", default=["torch/fp32", "auto"])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", type=int, default=512, help="side of the square photos sent")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args()
    from deeplab.model.device import cpu_name

    bodies = photos(args.requests, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        for serve in args.serves:
            uri = register_version(serve, store, args.model, args.metrics, args.deployed)
            row = {"serve": serve, "served": served_format(uri, store),
                   **serve_and_time(uri, store, bodies, args.warmup)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "server_log_tail"}), flush=True)
    base = rows[0]["median_ms"]
    for row in rows:
        row["speedup"] = round(base / row["median_ms"], 2)
    meta = {"command": " ".join(["python", "bench/serve_bench.py", *sys.argv[1:]]),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores",
            "photo": f"{args.size} x {args.size} PNG, one per request, one worker"}
    text = [f"{k}: {v}" for k, v in meta.items()] + [
        "", "| register.serve | served format | median ms | p90 ms | speed-up |", "|---|---|---|---|---|"]
    text += [f"| {r['serve']} | {r['served']} | {r['median_ms']} | {r['p90_ms']} | {r['speedup']}x |"
             for r in rows]
    print("\n".join(text))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        args.out.with_suffix(".md").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
