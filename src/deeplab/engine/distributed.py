"""Multi-process training under `torchrun`: process-group setup and synchronized BN.

`torchrun --nproc_per_node N pipeline/pretrain.py` (or `train.launcher` in params.yaml)
starts N processes; each joins the group described by the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group (a lone process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes; a lone process when WORLD_SIZE is unset or 1.

    Returns this process's place and its device (`cuda:LOCAL_RANK` on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's output depends on this process's input
        return grad[dist.get_rank()]


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (itself when alone); differentiable."""
    return _AllReduceSum.apply(value) if is_distributed() else value


def all_gather(value: torch.Tensor) -> torch.Tensor:
    """The tensors of all processes (equal shapes) concatenated along the first dimension, in
    rank order (itself when alone); differentiable."""
    return _AllGather.apply(value).flatten(0, 1) if is_distributed() else value


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover the batches of all processes.

    The same maths as `torch.nn.SyncBatchNorm`, written with a differentiable all-gather so
    that it runs on every backend (gloo on CPU included); with one process it is plain BN.
    Each process sends its count, mean and sum of squared deviations, combined with the
    parallel-variance formula (no `E[x^2] - E[x]^2` cancellation).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        shape = [1, c] + [1] * (x.dim() - 2)
        count = xf.new_full((c,), xf.numel() / c)
        mean_r = xf.mean(dims)
        m2_r = ((xf - mean_r.view(shape)) ** 2).sum(dims)
        stats = _AllGather.apply(torch.stack([count, mean_r, m2_r]))  # W x 3 x C
        counts, means, m2s = stats[:, 0], stats[:, 1], stats[:, 2]
        n = counts.sum(0)
        mean = (counts * means).sum(0) / n
        var = (m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def synchronize_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm with its synchronized form: torch's SyncBatchNorm on CUDA
    (fused kernels), `GlobalBatchNorm` elsewhere. Parameters and buffers are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        ref = next(iter(module.state_dict().values()))
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=ref.device, dtype=ref.dtype)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
