"""Every mode of bench/bench.py runs, at tiny sizes (bench/README.md quotes their numbers)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.repo import REPO


def bench(args: list[str], cwd: Path) -> dict:
    out = cwd / "result"
    proc = subprocess.run([sys.executable, str(BENCH), *args, "--out", str(out)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.with_suffix(".json").read_text())


BENCH = REPO / "bench" / "bench.py"



@pytest.mark.slow
def test_speed_mode(tmp_path):
    result = bench(["--device", "cpu", "--size", "65", "--batch", "1", "--warmup", "0",
                    "--repeats", "1", "--threads", "1", "--configs", "ours-r101-os16-dec-sc"], tmp_path)
    row = result["rows"][0]
    assert row["train_img_s"] > 0 and row["infer_latency_ms"] > 0
    assert (tmp_path / "result.md").read_text().count("\n") >= 3


@pytest.mark.slow
def test_preprocess_mode(tmp_path):
    result = bench(["--preprocess", "1", "2", "--size", "40", "--images", "6"], tmp_path)
    assert set(result["img_per_s_by_workers"]) == {"1", "2"}


@pytest.mark.slow
def test_signature_mode(tmp_path):
    result = bench(["--signature", "200", "--file-bytes", "100"], tmp_path)
    assert result["files"] == 200 and set(result["seconds"]) == {"first", "no_op", "no_op_again"}


@pytest.mark.slow
def test_loader_mode(tmp_path, tiny_train_csv, tiny_classes):
    (tmp_path / "data/processed").mkdir(parents=True)
    shutil.copy(tiny_train_csv, tmp_path / "data/processed/train.csv")
    shutil.copy(tiny_classes, tmp_path / "data/processed/classes.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # the mode, at a tiny size
    params["finetune"].update(batch_size=2, crop_size=33)
    params["runtime"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = bench(["--loader", "--loader-seconds", "0.5"], tmp_path)
    assert result["loader_img_s"] > 0 and result["train_step_img_s"] > 0


@pytest.mark.slow
def test_deploy_mode(tmp_path):
    """bench/deploy_bench.py: every runtime row and the peer, their peak fractions, the CPU."""
    out = tmp_path / "deploy"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "deploy_bench.py"), "--backbones",
                           "mobilenet_v2", "--threads", "1", "--size", "65", "--repeats", "1",
                           "--rounds", "1", "--out", str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert {"torch/fp32", "onnxruntime/fp32", "onnxruntime/int8", "openvino/fp32",
            "openvino/int8", "torchvision/fp32"} <= set(rows)
    assert all(r["ms"] > 0 for r in rows.values()) and rows["torch/fp32"]["vs_ours_fp32"] == 1.0
    assert result["cpu"]["model"] and result["matmul_peak_gmacs"]["1"]["fp32"] > 0
    assert "| mobilenet_v2 | 1 | openvino/int8 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_imbalance_mode(tmp_path):
    """bench/imbalance.py: every loss setting at every seed, the rare class's share, the
    per-seed table and the verdicts."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    out = tmp_path / "imbalance"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "imbalance.py"), "--seeds", "0", "1",
                           "--iterations", "2", "--size", "48", "--train-images", "6",
                           "--val-images", "3", "--threads", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert {(r["setting"], r["seed"]) for r in result["runs"]} == {
        (s, k) for s in ("ce", "ohem", "ce+inverse_frequency", "ce+dice") for k in (0, 1)}
    assert 0 <= result["meta"]["rare class share of training pixels"] < 0.05
    assert [line["setting"] for line in result["summary"]][0] == "ce"
    assert "| ce+dice |" in out.with_suffix(".md").read_text()



@pytest.mark.slow
def test_trainer_mode(tmp_path):
    """bench/trainer.py: plain, warmup, EMA and a timm encoder at every seed, each model's
    speed and multiply-adds, and the verdicts against plain."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    out = tmp_path / "trainer"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "trainer.py"), "--seeds", "0", "1",
                           "--iterations", "2", "--size", "48", "--train-images", "6",
                           "--val-images", "3", "--threads", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    settings = ("plain", "warmup", "ema", "timm:mobilenetv3_large_100")
    assert {(r["setting"], r["seed"]) for r in result["runs"]} == {(s, k) for s in settings for k in (0, 1)}
    madds = {line["setting"]: line["madds_b"] for line in result["summary"]}
    assert madds["plain"] == madds["ema"] == 2.88 and madds["timm:mobilenetv3_large_100"] == 2.51
    assert "| timm:mobilenetv3_large_100 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_label_next_mode(tmp_path):
    """bench/label_next.py: both arms at every seed, the precision of each score's top K, and
    the gains with their verdicts."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    out = tmp_path / "label_next"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "label_next.py"), "--seeds", "0", "1",
                           "--size", "40", "--train-images", "4", "--pool-images", "6",
                           "--pool-novel", "2", "--val-images", "4", "--base-iterations", "2",
                           "--more-iterations", "1", "--threads", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for run in result["runs"]:
        for key in ("precision_at_k_entropy", "precision_at_k_low_confidence", "precision_at_k_random"):
            assert run[key] in (0.0, 0.5, 1.0)  # K = 2
        assert 0 <= run["top_k_miou"] <= 1 and 0 <= run["random_k_novel_miou"] <= 1
    verdicts = [line for line in result["summary"] if line["measure"].startswith("gain_")]
    assert len(verdicts) == 2 and all(isinstance(v["beats_spread"], bool) for v in verdicts)
