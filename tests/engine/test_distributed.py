"""Multi-process training: 2 processes (and 2 nodes, c10d) equal 1 process on the same global
batch, in float64 so the comparison tests the maths."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.models import (
    free_port,
)
from helpers.repo import REPO
from torch import nn

from deeplab.engine.distributed import GlobalBatchNorm, synchronize_batchnorm

HELPER = REPO / "tests" / "helpers" / "ddp_train.py"


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tiny_train_csv, tmp_path_factory) -> Path:
    """The weights of one process on the global batch (what the distributed runs must give)."""
    folder = tmp_path_factory.mktemp("one")
    _run([sys.executable, str(HELPER), str(tiny_train_csv), "one.pt", "one.ckpt"], folder)
    return folder / "one.pt"


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_train_csv, tmp_path, one_process):
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(HELPER), str(tiny_train_csv), "two.pt", "two.ckpt"], tmp_path)
    one = torch.load(one_process, weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["bn"] == {"GlobalBatchNorm"} and "GlobalBatchNorm" not in one["bn"]
    # The logged loss is the global-batch mean on both.
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-8)
    changed = 0
    for key, a in one["state"].items():
        b = two["state"][key]
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), key
        changed += 1
    assert changed == len(two["state"])
    assert (tmp_path / "two.ckpt").is_file()  # written by rank 0


@pytest.mark.slow
def test_accumulation_under_ddp_equals_one_process(tiny_train_csv, tmp_path):
    """`accumulate: 2` with frozen BN: 2 processes, which skip the gradient all-reduce on the
    first micro-batch (`no_sync`), train the weights of 1 process. (Frozen BN under DDP had
    been thawed: the synchronized BN modules replaced the frozen ones after freezing.)"""
    for name, launch in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node", "2"])):
        _run([sys.executable, *launch, str(HELPER), str(tiny_train_csv), f"{name}.pt",
              f"{name}.ckpt", "accumulate"], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert two["world_size"] == 2 and one["loss"] == pytest.approx(two["loss"], rel=1e-8)
    for key, a in one["state"].items():
        assert torch.allclose(a, two["state"][key], rtol=1e-6, atol=1e-8), key


@pytest.mark.slow
def test_every_loss_keeps_the_global_batch_semantics(tiny_train_csv, tmp_path):
    """OHEM (a global top-k), focal, Dice (global per-class sums) and Lovász (a global sort),
    with class weights: 2 processes train the same weights as 1 on the same global batch."""
    losses = "ohem+focal+dice+0.5*lovasz"
    _run([sys.executable, str(HELPER), str(tiny_train_csv), "one.pt", "one.ckpt", losses], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(HELPER), str(tiny_train_csv), "two.pt", "two.ckpt", losses], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert two["world_size"] == 2
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-8)
    for key, a in one["state"].items():
        assert torch.allclose(a, two["state"][key], rtol=1e-6, atol=1e-8), key


def test_global_batchnorm_alone_is_plain_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    bn.weight.data.uniform_()
    glob = synchronize_batchnorm(nn.Sequential(bn), torch.device("cpu"))[0]
    assert isinstance(glob, GlobalBatchNorm)
    assert torch.equal(glob.weight, bn.weight)
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(glob(x), bn(x))
    assert torch.allclose(glob.running_mean, bn.running_mean)


@pytest.mark.slow
def test_two_nodes_on_c10d_rendezvous_match_one_process(tiny_train_csv, tmp_path, one_process):
    """Two torchrun launches joined by a c10d rendezvous on 127.0.0.1 (one process each, as
    two machines would be): the same weights as one process with the same global batch."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", "deeplab-test", str(HELPER), str(tiny_train_csv), "nodes.pt", f"node{rank}.ckpt"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-2000:] for o in outputs)
    one = torch.load(one_process, weights_only=True)
    both = torch.load(tmp_path / "nodes.pt", weights_only=True)
    assert both["world_size"] == 2 and both["bn"] == {"GlobalBatchNorm"}
    assert one["loss"] == pytest.approx(both["loss"], rel=1e-8)
    for key, a in one["state"].items():
        assert torch.allclose(a, both["state"][key], rtol=1e-6, atol=1e-8), key
    written = sorted(p.name for p in tmp_path.glob("node*.ckpt"))
    assert len(written) == 1  # one checkpoint, by the global rank 0
