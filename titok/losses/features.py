"""A perceptual term for small grayscale-like data that needs no download: LPIPS's recipe on a Fashion-MNIST
classifier's activations.

LPIPS compares two images by the unit-normalised activations of a pretrained network, layer by layer. Its VGG16 and
ConvNeXt-S weights are ImageNet downloads; for Fashion-MNIST-sized data titok trains its own classifier
(:mod:`titok.metrics.fmnist`, a few minutes on a CPU). The loss reads every convolutional block's output (after the
ReLU: 32x32, 16x16 twice, 8x8 twice, 4x4), normalises each position's channel vector to unit length, and sums over
layers the spatial mean of the squared differences (LPIPS without its learned heads, i.e. every channel weighted 1).

Train the network with another seed than the one behind the FD-fmnist score (``python -m titok.metrics.fmnist
--seed 1 -o FILE``): a loss on the evaluation network's own features would optimise the score directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# A Fashion-MNIST classifier trained for this loss alone (`python -m titok.metrics.fmnist --epochs 6 --seed 1`, test
# accuracy 0.921): not the FD-fmnist network (seed 0), so that a tokenizer trained against its features is not
# scored by the network it was trained against.
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "fmnist_perceptual.safetensors"


class ClassifierFeatureLoss(nn.Module):
    """Mean over the batch of the LPIPS-style distance in a :class:`FashionMNISTClassifier`'s activations (a scalar);
    images (B, 3, H, W) in [0, 1]. ``weights``: a classifier's file, or ``"shipped"`` for :data:`SHIPPED`."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from titok.metrics.fmnist import load_classifier

        path = SHIPPED if str(weights) == "shipped" else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"losses.fmnist_feature_network: no such file {path}; train one with "
                f"`python -m titok.metrics.fmnist --seed 1 -o {path}` (use another seed than the FD-fmnist network's)"
            )
        self.classifier = load_classifier(path)  # eval mode, frozen

    def activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        from titok.metrics.fmnist import INPUT_SIZE, MEAN, STD

        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        x, taps = (x - MEAN) / STD, []
        for layer in self.classifier.body:
            x = layer(x)
            if isinstance(layer, nn.Sequential):  # a conv block: conv, batch norm, ReLU
                taps.append(x)
        return taps

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = images.new_zeros((), dtype=torch.float32)
        with torch.no_grad():
            reference = self.activations(targets)
        for a, b in zip(self.activations(images), reference):
            a, b = F.normalize(a, dim=1, eps=1e-10), F.normalize(b, dim=1, eps=1e-10)
            total = total + (a - b).pow(2).sum(1).mean()
        return total
