"""Accuracy: the reference metrics, threshold tuning, and a bundle run over a Corel-layout split."""
