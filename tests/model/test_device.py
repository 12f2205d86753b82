"""Training precision follows what the hardware computes natively (`train.amp`,
`train.channels_last`)."""

import pytest
import torch

from deeplab.core.errors import ConfigError
from deeplab.model import device as dev

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
AMX = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})  # this session's machine: bf16 would be emulated


def with_flags(monkeypatch, flags):
    monkeypatch.setattr(dev, "cpu_flags", lambda: flags)


@pytest.mark.parametrize("flags, expected", [(AMX, ("bf16", True)), (AVX512_BF16, ("bf16", True)),
                                             (AVX2, ("off", False))])
def test_auto_trains_bf16_where_the_cpu_computes_it(monkeypatch, flags, expected):
    with_flags(monkeypatch, flags)
    chosen = dev.train_precision("auto", "auto", CPU)
    assert (chosen.amp, chosen.channels_last) == expected
    assert chosen.dtype == (torch.bfloat16 if expected[0] == "bf16" else None)
    assert dev.train_precision("auto", "auto", CUDA) == dev.TrainPrecision("bf16", True)
    assert dev.train_precision("auto", False, CUDA).channels_last is False


def test_emulated_bf16_and_cpu_fp16_are_one_line(monkeypatch):
    with_flags(monkeypatch, AVX2)
    with pytest.raises(ConfigError, match=r"^train.amp: bf16 on this CPU would be emulated .*use auto or off$"):
        dev.train_precision("bf16", "auto", CPU)
    with pytest.raises(ConfigError, match="fp16 autocast needs CUDA"):
        dev.train_precision("fp16", True, CPU)
    assert dev.train_precision("off", True, CPU) == dev.TrainPrecision("off", True)
    with_flags(monkeypatch, AVX512_BF16)
    assert dev.train_precision("bf16", False, CPU) == dev.TrainPrecision("bf16", False)
