"""Serving: the deployable `Segmenter`, `predict`, `export` and the MLflow registry. No training
stage imports this package."""
