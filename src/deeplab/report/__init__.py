"""The evaluate stage's outputs: the ablation table, figures and multiply-add counts."""
