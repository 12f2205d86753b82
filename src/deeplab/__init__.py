"""DeepLabV3+ pipeline library.

model/ (the network only), data/ (formats, preprocessing, dataset), engine/ (training loop,
distributed, resumable checkpoints, the training stage), evaluation/ (metrics, inference
strategies, tables and figures), serving/ (segmenter, predict, export, registry); config,
errors, io, tracking, device and model_files are shared by all of them.
"""
