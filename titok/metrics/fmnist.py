"""A small Fashion-MNIST classifier: the offline feature extractor behind the "FD-fmnist" score.

The network reads (B, 3, 32, 32) images in [0, 1] (Fashion-MNIST's grayscale repeated over three channels, as
``titok.data.datasets.FashionMNIST`` serves it at ``Preprocess(32)``); its 128-d globally pooled features play the
part of Inception's pool features (Fréchet distance) and its 10 logits that of Inception's logits (Inception Score).

The shipped weights (``titok/assets/fmnist_classifier.safetensors``, 145,242 parameters) were trained on the
60,000 training images only and reach 91.97% accuracy on the 10,000 held-out test images. They are reproduced
(seeded; on a CPU in about four minutes) by::

    python -m titok.metrics.fmnist --epochs 6 --seed 0 -o titok/assets/fmnist_classifier.safetensors

For scale, against the statistics of the 60,000 training images: the 10,000 test images score FD-fmnist 0.013,
the test images with Gaussian noise of std 0.05 score 1.7, blurred (down to 16 px and back) 6.1; the IS-fmnist
of the test images is 6.52 (of at most 10).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "fmnist_classifier.safetensors"
INPUT_SIZE = 32
MEAN, STD = 0.286, 0.353  # of the Fashion-MNIST training pixels


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionMNISTClassifier(nn.Module):
    """A VGG-style CNN: 32x32 -> 16 -> 8 -> 4, global average pool to 128 features, a linear layer to 10 logits."""

    feature_dim = 128
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, 16),
            nn.MaxPool2d(2),
            _conv(16, 32),
            _conv(32, 32),
            nn.MaxPool2d(2),
            _conv(32, 64),
            _conv(64, 64),
            nn.MaxPool2d(2),
            _conv(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(self.feature_dim, self.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) float in [0, 1] (resized to 32x32 if needed) -> features (B, 128)."""
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return self.body((images - MEAN) / STD)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) float in [0, 1] -> (features (B, 128), logits (B, 10))."""
        features = self.features(images)
        return features, self.fc(self.dropout(features))


def load_classifier(path: str | Path = WEIGHTS) -> FashionMNISTClassifier:
    """The classifier with the weights in ``path`` (default: the shipped ones), in eval mode, gradients off."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST classifier weights not found: {path}")
    model = FashionMNISTClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a Fashion-MNIST split as the models see it: (N, 3, 32, 32) float in [0, 1], labels (N,)."""
    from titok.data.datasets import FashionMNIST
    from titok.data.transforms import Preprocess

    data = FashionMNIST(split, Preprocess(INPUT_SIZE))
    images = torch.stack([data[i][0] for i in range(len(data))])
    return images, data.labels.clone()


@torch.no_grad()
def accuracy(model: FashionMNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    """Fraction of ``images`` (N, 3, H, W) in [0, 1] whose argmax logit is the label (N,)."""
    model.eval()
    hits = sum(
        int((model(images[i : i + batch])[1].argmax(1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    return hits / len(images)


def train(
    epochs: int = 6, seed: int = 0, batch_size: int = 128, lr: float = 3e-3
) -> tuple[FashionMNISTClassifier, float]:
    """Train on the training split (random crops with 2-px padding and horizontal flips), AdamW with a cosine
    schedule; returns the model (eval mode) and its accuracy on the held-out test split."""
    torch.manual_seed(seed)
    images, labels = _split("train")
    model = FashionMNISTClassifier()
    steps = epochs * math.ceil(len(images) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        start, total = time.time(), 0.0
        for idx in torch.randperm(len(images), generator=g).split(batch_size):
            x = _augment(images[idx], g)
            loss = F.cross_entropy(model(x)[1], labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        logger.info("epoch %d: loss %.4f (%.0f s)", epoch + 1, total / len(images), time.time() - start)
    test_images, test_labels = _split("test")
    return model.eval(), accuracy(model, test_images, test_labels)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 2-px-padded crops (one offset per batch) and per-image horizontal flips."""
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,), generator=g))
    x = F.pad(x, (2, 2, 2, 2))[:, :, dy : dy + INPUT_SIZE, dx : dx + INPUT_SIZE]
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from titok.io import atomic_write

    p = argparse.ArgumentParser(description="Train the Fashion-MNIST classifier behind the FD-fmnist score.")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=str(WEIGHTS), help="the .safetensors to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, acc = train(args.epochs, args.seed)
    meta = {
        "test_accuracy": f"{acc:.4f}",
        "epochs": str(args.epochs),
        "seed": str(args.seed),
        "torch": torch.__version__,
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(args.output, lambda tmp: save_file(state, tmp, metadata=meta))
    print(f"test accuracy {acc:.4f}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
