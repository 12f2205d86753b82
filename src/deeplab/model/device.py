"""Where tensors run and at which precision: `auto` picks CUDA when present, else CPU; the
training precision follows what the hardware computes natively."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (`/proc/cpuinfo`); empty where the file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_name() -> str:
    """The CPU's model name and its vector extensions that matter for inference speed (what a
    timing was measured on), e.g. `Intel(R) Xeon(R) Processor (AVX512_BF16, AMX)`."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(line.partition(":")[2].strip() for line in text.splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        name = platform.processor() or platform.machine()
    flags = cpu_flags()
    kinds = [label for flag, label in (("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX"),
                                       ("avx512_vnni", "VNNI"), ("avx512f", "AVX-512"),
                                       ("avx2", "AVX2")) if flag in flags]
    return f"{name} ({', '.join(kinds[:3]) or 'no AVX2'})"


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX)."""
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return "AVX512" in torch.backends.cpu.get_cpu_capability() and torch.cpu._is_avx512_bf16_supported()


# A bf16 training step on a CPU that emulates bf16 (a 2-core AMD EPYC with AVX2 only) ran at
# 0.08x-0.14x of fp32's speed (bench/README.md "Training precision").
EMULATED = "would be emulated (neither AVX512_BF16 nor AMX), 7-12x slower than fp32"


@dataclass(frozen=True)
class TrainPrecision:
    """How a training run computes: autocast dtype name (`off`, `bf16`, `fp16`), and whether
    tensors are channels_last."""

    amp: str
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)


def train_precision(amp: str, channels_last: bool | str, device: torch.device) -> TrainPrecision:
    """The precision `train.amp` / `train.channels_last` give on `device`.

    `auto`: bf16 autocast with channels_last on CUDA and on CPUs that compute bf16 natively
    (AVX512_BF16 or AMX), fp32 elsewhere. An explicit `bf16` on a CPU that would emulate it is
    refused in one line; `fp16` is CUDA's (refused on a CPU).
    """
    if device.type == "cuda":
        chosen = "bf16" if amp == "auto" else amp
    elif amp == "auto":
        chosen = "bf16" if cpu_bf16() else "off"
    elif amp == "fp16":
        raise ConfigError("train.amp: fp16 autocast needs CUDA (with a gradient scaler); on a CPU "
                          "use bf16 (with AVX512_BF16 or AMX), auto or off")
    elif amp == "bf16" and not cpu_bf16():
        raise ConfigError(f"train.amp: bf16 on this CPU {EMULATED}; use auto or off")
    else:
        chosen = amp
    if channels_last == "auto":
        channels_last = device.type == "cuda" or chosen == "bf16"
    return TrainPrecision(chosen, bool(channels_last))
