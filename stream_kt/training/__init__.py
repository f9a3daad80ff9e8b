"""Offline half: training, evaluation, checkpoints, metrics and plots."""
