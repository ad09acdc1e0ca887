"""Image-quality and codebook metrics."""
