"""Reading images and datasets into (B, 3, H, W) float tensors in [0, 1]."""
