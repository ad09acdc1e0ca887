"""Evaluation of tokenizers and generators with a pinned protocol (the only layer, besides the CLI and training,
that combines models, data and metrics).

- :func:`evaluate_reconstruction`: rFID, IS, PSNR, SSIM, LPIPS, codebook usage and entropy.
- :func:`evaluate_generation`: gFID and IS of class-balanced samples, optionally exported for the ADM evaluator.
- :func:`reference_statistics`: statistics from an ``.npz`` or computed (and cached) from real images.
"""

from titok.eval.gen import GenOptions, balanced_labels, evaluate_generation
from titok.eval.recon import ReconOptions, evaluate_reconstruction
from titok.eval.reference_stats import image_statistics, reference_statistics
from titok.eval.report import EvalReport, Metric

__all__ = [
    "EvalReport",
    "GenOptions",
    "Metric",
    "ReconOptions",
    "balanced_labels",
    "evaluate_generation",
    "evaluate_reconstruction",
    "image_statistics",
    "reference_statistics",
]
