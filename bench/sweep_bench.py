"""Sweeps, measured: the wall time of one study's trials with 1 worker against 2 workers (one
core each), and the training iterations the median pruner saves at the best value found.

    python bench/sweep_bench.py --trials 8 --seeds 0 1 2 --out bench/results/sweep

A small pipeline (the default profile's data, pretraining and model, with a 200-iteration
finetune that validates 5 times, no ablation variants and a light evaluate) is built once from this repository's committed files with `dvc
repro`, pushed to a bare git remote and a DVC directory remote, and cloned once per worker;
all workers share one SQLite study storage and one MLflow store. The space is
`finetune.lr` (log-uniform), so each trial retrains finetune and reruns evaluate, register
and rank. Workers are the real `python -m deeplab.sweep run`, each with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GIT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
BIN = Path(sys.executable).parent
FINETUNE = {"iterations": 200, "val_every": 40}


def sh(args: list[str], cwd: Path, env: dict | None = None) -> str:
    full = {**os.environ, **GIT, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{args} in {cwd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def profile(params: dict) -> dict:
    """The default profile's data and model with a shorter finetune (200 iterations, validated
    every 40 on 20 images), no variants and a light evaluate: trials whose validation mIoU
    differs from step to step and from one learning rate to the next, as on real data. (The
    test suite's tiny profile does not: every trial reports the same mIoU at every step, and
    a pruner has nothing to compare.)"""
    params["data"]["synthetic"].update(val_images=20, pool_images=6)
    params["finetune"].update(**FINETUNE, checkpoint_every=FINETUNE["iterations"])
    params["runtime"]["workers"] = 0
    params["evaluate"].update(scales=[1.0], trimap_widths=[2], sample_images=2, madds_size=65)
    params["deploy"].update(formats=["torch/fp32"], calibration_images=4, calibration_size=33)
    params["ablations"] = {}
    return params


def tracking_server(root: Path) -> tuple[subprocess.Popen, str]:
    """An `mlflow server` on 127.0.0.1 (SQLite backend, served artifacts), as a team has one;
    its log to a file."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = root / "mlflow"
    store.mkdir()
    with open(store / "server.log", "wb") as log:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri",
                                 f"sqlite:///{store / 'mlflow.db'}", "--serve-artifacts",
                                 "--artifacts-destination", str(store / "artifacts"), "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2)
            return proc, uri
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(store / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)


def pipeline(root: Path, tracking: str) -> Path:
    """The bench pipeline after its `dvc repro`, pushed: the bare git remote's path."""
    base = root / "base"
    sh(["git", "clone", "-q", str(REPO), str(base)], root)
    params = profile(yaml.safe_load((base / "params.yaml").read_text()))
    (base / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"MLFLOW_TRACKING_URI": tracking, "TQDM_DISABLE": "1", "PYTHONPATH": str(base / "src")}
    sh(["dvc", "repro", "-q"], base, env)
    sh(["dvc", "remote", "add", "-d", "team", str(root / "dvc-remote")], base)
    sh(["dvc", "push", "-q"], base)
    sh(["git", "add", "-A"], base)
    sh(["git", "commit", "-qm", "bench pipeline"], base)
    sh(["git", "clone", "-q", "--bare", str(base), str(root / "origin.git")], root)
    return root / "origin.git"


def publish(origin: Path, sweep: dict, owner: Path) -> None:
    """The study's settings committed and pushed (what its owner does before the workers)."""
    if not owner.exists():
        sh(["git", "clone", "-q", str(origin), str(owner)], owner.parent)
    sh(["git", "pull", "-q"], owner)
    params = yaml.safe_load((owner / "params.yaml").read_text())
    params["sweep"] = sweep
    (owner / "params.yaml").write_text(yaml.safe_dump(params))
    sh(["git", "commit", "-qam", f"sweep {sweep['study']}"], owner)
    sh(["git", "push", "-q", "origin", "HEAD"], owner)


def machine(origin: Path, folder: Path) -> Path:
    """A worker's clone, up to date with the remote's settings and outputs."""
    if not folder.exists():
        sh(["git", "clone", "-q", str(origin), str(folder)], folder.parent)
        sh(["dvc", "pull", "-q"], folder)
    sh(["git", "pull", "-q"], folder)
    return folder


def run_study(root: Path, origin: Path, tracking: str, name: str, workers: int, trials: int,
              pruner: str, seed: int) -> dict:
    import optuna

    storage = f"sqlite:///{root / 'studies.db'}"
    sweep = {"study": name, "storage": storage, "metric": "miou", "trials": trials,
             "sampler": "tpe", "pruner": pruner, "seed": seed, "heartbeat_s": 5, "grace_s": 30,
             "space": {"finetune.lr": {"low": 0.003, "high": 0.5, "log": True}}}
    publish(origin, sweep, root / "owner")
    clones = [machine(origin, root / f"worker{k}") for k in range(workers)]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": tracking, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    procs = []
    for clone in clones:
        log = open(root / f"{name}-{clone.name}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "deeplab.sweep", "run"], cwd=clone,
                                      env={**env, "PYTHONPATH": str(clone / "src")}, stdout=log,
                                      stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"study {name}: a worker exited {codes}; see {root}/{name}-*.log")
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    iterations = sum(int(t.user_attrs.get("pruned_at", FINETUNE["iterations"])) for t in done)
    complete = [t.value for t in done if t.state.name == "COMPLETE"]
    return {"study": name, "workers": workers, "pruner": pruner, "seed": seed,
            "seconds": round(seconds, 1), "trials": len(done),
            "pruned": sum(t.state.name == "PRUNED" for t in done),
            "finetune_iterations": iterations, "best": round(max(complete), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = ap.parse_args()
    from deeplab.model.device import cpu_name

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, tracking = tracking_server(root)
        try:
            built = time.perf_counter()
            origin = pipeline(root, tracking)
            print(f"bench pipeline built in {time.perf_counter() - built:.0f} s", flush=True)
            for workers in (1, 2):  # the same study (pruner none, seed 0) on 1 and on 2 workers
                rows.append(run_study(root, origin, tracking, f"speed-{workers}", workers,
                                      args.trials, "none", args.seeds[0]))
                print(json.dumps(rows[-1]), flush=True)
            for seed in args.seeds:  # pruning: 2 workers, with and without the median pruner
                for pruner in ("none", "median"):
                    if pruner == "none" and seed == args.seeds[0]:
                        continue  # speed-2 is this study
                    rows.append(run_study(root, origin, tracking, f"{pruner}-{seed}", 2,
                                          args.trials, pruner, seed))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)
    one, two = rows[0], rows[1]
    pruning = []
    for seed in args.seeds:
        plain = next(r for r in rows if r["workers"] == 2 and r["pruner"] == "none" and r["seed"] == seed)
        median = next(r for r in rows if r["pruner"] == "median" and r["seed"] == seed)
        pruning.append({"seed": seed, "iterations_none": plain["finetune_iterations"],
                        "iterations_median": median["finetune_iterations"],
                        "saved": round(1 - median["finetune_iterations"] / plain["finetune_iterations"], 3),
                        "best_none": plain["best"], "best_median": median["best"],
                        "pruned": median["pruned"]})
    summary = {"speedup_2_workers": round(one["seconds"] / two["seconds"], 2),
               "iterations_saved_mean": round(statistics.mean(p["saved"] for p in pruning), 3)}
    meta = {"command": " ".join(["python", "bench/sweep_bench.py", *sys.argv[1:]]),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.python_version()}",
            "trial": f"finetune {FINETUNE['iterations']} iterations (validated every "
                     f"{FINETUNE['val_every']}), deploy, evaluate, register, rank; 1 thread per worker"}
    text = [f"{k}: {v}" for k, v in meta.items()] + [
        "", f"{args.trials} trials: 1 worker {one['seconds']} s, 2 workers {two['seconds']} s "
            f"(speed-up {summary['speedup_2_workers']}x)", "",
        "| seed | finetune iterations, no pruner | median pruner | saved | trials pruned | "
        "best mIoU, no pruner | median pruner |", "|---|---|---|---|---|---|---|"]
    text += [f"| {p['seed']} | {p['iterations_none']} | {p['iterations_median']} | "
             f"{p['saved']:.0%} | {p['pruned']} | {p['best_none']} | {p['best_median']} |"
             for p in pruning]
    print("\n".join(text))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"meta": meta, "studies": rows, "pruning": pruning, "summary": summary}, indent=2))
        args.out.with_suffix(".md").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
