"""PyTorch training of the reference annotation methods into self-describing checkpoints."""
