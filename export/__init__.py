"""Checkpoints to ONNX bundles: graphs, manifest, verification against PyTorch."""
