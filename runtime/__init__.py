"""Torch-free runtime: vocabulary, preprocessing, dataset layout and metrics shared with training."""
