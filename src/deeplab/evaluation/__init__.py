"""Evaluation: metrics, inference strategies and geometry, split evaluation."""
