"""Experiments beyond one run: the papers' protocols as checked overrides (`recipe`) and
studies of many trials on many machines, Optuna over DVC experiments (`python -m deeplab.sweep`)."""
