"""Train a tiny model for a few iterations, alone or as one of the processes torchrun starts.

Usage: ddp_train.py <train.csv> <out.pt> <checkpoint> [loss]. Rank 0 writes the final weights.
With a loss expression (e.g. ohem+focal+dice+lovasz), it trains with it and class weights;
`accumulate` trains with 2 micro-batches of 2 per optimizer step (cross-entropy).
"""

import sys
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from deeplab.core.schema import RuntimeConfig, Schedule, TrainConfig
from deeplab.data.dataset import SegmentationDataset, read_list
from deeplab.engine.distributed import init_from_env, shutdown
from deeplab.engine.loop import TrainOptions, train
from deeplab.model import DeepLabV3Plus

SCHED = Schedule(iterations=3, batch_size=4, crop_size=49, lr=0.01, lr_power=0.9, momentum=0.9,
                 weight_decay=4e-5, scale_range=[0.5, 2.0], flip=True, checkpoint_every=2,
                 val_every=0, freeze_bn=False)
SETTINGS = TrainConfig(launcher="python", device="cpu", amp="off", channels_last=False, compile=False)
RUNTIME = RuntimeConfig(workers=0, threads=1, log_every=1)


def main(csv: str, out: str, checkpoint: str, loss: str = "ce") -> None:
    torch.set_num_threads(1)
    info, device = init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    model = DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16, dropout=0.0)
    model.double()  # float64: the comparison tests the maths, not float32 rounding
    dataset = SegmentationDataset(read_list(csv), SCHED.crop_size, SCHED.scale_range, True)
    if loss == "accumulate":
        # frozen BN: a micro-batch's statistics would otherwise depend on which samples it holds
        sched, weights = SCHED.replace(batch_size=2, accumulate=2, freeze_bn=True), None
    else:
        sched = SCHED if loss == "ce" else SCHED.replace(loss=loss, top_k_percent_pixels=0.3,
                                                         hard_example_mining_step=2)
        weights = None if loss == "ce" else [0.5 + (k % 4) * 0.5 for k in range(21)]
    result = train(model, dataset, sched, SETTINGS, RUNTIME,
                   TrainOptions(Path(checkpoint), seed=3, device=device, rank=info.rank,
                                world_size=info.world_size, class_weights=weights))
    if info.is_main:
        torch.save({"state": model.state_dict(), "loss": [h["loss"] for h in result.history],
                    "world_size": info.world_size, "bn": {type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)}},
                   out)
    shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
