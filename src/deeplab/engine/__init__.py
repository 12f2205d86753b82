"""Training: the loop, optimizer and schedule, resumable checkpoints, distributed processes,
and what the pretrain/finetune/variant stages do around them."""
