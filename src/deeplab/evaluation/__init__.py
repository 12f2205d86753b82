"""Evaluation: metrics, inference strategies and geometry, split evaluation, and the evaluate
stage's tables and figures (`report`)."""
