"""A tiny training schedule and settings for the engine tests."""

from deeplab.core.schema import RuntimeConfig, Schedule, TrainConfig

SCHED = Schedule(iterations=6, batch_size=2, crop_size=33, lr=0.01, lr_power=0.9, momentum=0.9,
                 weight_decay=4e-5, scale_range=[0.5, 2.0], flip=True, checkpoint_every=2,
                 val_every=0, freeze_bn=False)
SETTINGS = TrainConfig(launcher="python", device="cpu", amp="off", channels_last=False, compile=False)
RUNTIME = RuntimeConfig(workers=0, threads=2, log_every=1)
