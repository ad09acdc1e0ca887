"""Feature extractors for Fréchet distances and Inception Scores.

Every extractor reads uint8 images (B, 3, H, W) — the images as a PNG would hold them — and returns features
(B, D) and, when it is a classifier, logits (B, C), both float64.

- :func:`inception`: the standard FID Inception-v3 (torch-fidelity's port of the TF graph, with the pytorch-fid /
  torch-fidelity weights ``*-inception-2015-12-05-6726825d.pth``, whose SHA-256 is checked), run in float64:
  TF1-style bilinear resize to 299, pool features (2048) and ``logits_unbiased`` (1008) for the IS.
- :func:`fmnist`: the small Fashion-MNIST classifier that titok ships (``FD-fmnist``), for offline scores.
- :class:`ModuleExtractor`: any ``torch.nn.Module`` mapping float images in [0, 1] to features or
  (features, logits).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from titok.extras import install_hint

logger = logging.getLogger(__name__)

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_ENV = "TITOK_INCEPTION_WEIGHTS"


class Features(NamedTuple):
    features: torch.Tensor  # (B, D) float64
    logits: torch.Tensor | None  # (B, C) float64, or None for a pure feature extractor


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureExtractor(nn.Module):
    """Base of the extractors: ``name`` and ``sha256`` identify it in statistics files and results; ``score_name``
    is what a Fréchet distance in its features is called (FID, FD-fmnist, FD-<name>)."""

    name: str
    score_name: str
    sha256: str

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def describe(self) -> dict[str, str]:
        return {"extractor": self.name, "extractor_sha256": self.sha256}

    def check_input(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"extractors read uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


class ModuleExtractor(FeatureExtractor):
    """Any module mapping float images (B, 3, H, W) in [0, 1] to features (B, D), or to (features, logits (B, C))."""

    def __init__(self, module: nn.Module, name: str, score_name: str | None = None, sha256: str | None = None) -> None:
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.name, self.score_name = name, score_name or f"FD-{name}"
        self.sha256 = sha256 or state_dict_sha256(module)

    @property
    def device(self) -> torch.device:
        return next(iter(self.module.parameters()), torch.empty(0)).device

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> Features:
        with torch.autocast(self.device.type, enabled=False):  # scores are computed in float32, whatever the caller's
            out = self.module(images.to(self.device).float() / 255)
        features, logits = out if isinstance(out, tuple) else (out, None)
        if features.ndim != 2:
            raise ValueError(f"extractor {self.name} returned features of shape {tuple(features.shape)}, not (B, D)")
        return Features(features.double(), logits.double() if logits is not None else None)

    def forward(self, images: torch.Tensor) -> Features:
        """uint8 images (B, 3, H, W) -> features (B, D) [, logits (B, C)], float64."""
        self.check_input(images)
        return self._run(images)


def fmnist(path: str | Path | None = None) -> ModuleExtractor:
    """The shipped Fashion-MNIST classifier (titok/assets/fmnist_classifier.safetensors): 128-d features, 10 logits."""
    from titok.metrics.fmnist import WEIGHTS, load_classifier

    path = Path(path or WEIGHTS)
    return ModuleExtractor(load_classifier(path), "fmnist-cnn", "FD-fmnist", sha256_file(path))


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("TITOK_OFFLINE", "HF_HUB_OFFLINE"))


def find_inception_weights(path: str | Path | None = None) -> Path:
    """The FID Inception weights: ``path``, else ``$TITOK_INCEPTION_WEIGHTS``, else torch's checkpoint cache
    (``torch.hub.get_dir()/checkpoints``, either file name), else downloaded there (unless ``TITOK_OFFLINE`` or
    ``HF_HUB_OFFLINE`` is set). Raises ``FileNotFoundError`` naming the file and where to put it."""
    explicit = path or os.environ.get(INCEPTION_ENV)
    if explicit:
        if not Path(explicit).is_file():
            source = "given" if path else f"named by ${INCEPTION_ENV}"
            raise FileNotFoundError(f"the Inception weights file {source} does not exist: {explicit}")
        return Path(explicit)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (cache / name).is_file():
            return cache / name
    target = cache / INCEPTION_FILES[0]
    hint = (
        f"the FID Inception weights ({INCEPTION_FILES[0]}, or pytorch-fid's {INCEPTION_FILES[1]}, SHA-256 "
        f"{INCEPTION_SHA256[:16]}...) are not available: download {INCEPTION_URL} and put it at {target}, or pass "
        f"--inception-weights FILE (Python: weights=FILE), or set ${INCEPTION_ENV}=FILE"
    )
    if _offline():
        raise FileNotFoundError(hint + " (offline: no download attempted)")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), hash_prefix=INCEPTION_SHA256[:8], progress=False)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise FileNotFoundError(f"{hint} (download failed: {e})") from None
    return target


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's FID Inception-v3 in float64: pool features (2048) and unbiased logits (1008)."""

    score_name = "FID"

    def __init__(self, weights: str | Path | None = None, verify: bool = True) -> None:
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise ImportError(f"the FID Inception network needs torch-fidelity: {install_hint('eval')}") from None
        path = find_inception_weights(weights)
        self.sha256 = sha256_file(path)
        if verify and self.sha256 != INCEPTION_SHA256:
            raise ValueError(
                f"{path} is not the FID Inception weights: its SHA-256 is {self.sha256}, expected {INCEPTION_SHA256} "
                f"({INCEPTION_URL})"
            )
        # torch-fidelity unpickles the file in full; prove first that it holds nothing but tensors
        torch.load(path, map_location="cpu", weights_only=True)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], str(path), feature_extractor_internal_dtype="float64"
        )
        self.name = "inception-v3-compat" if self.sha256 == INCEPTION_SHA256 else "inception-v3-compat-unverified"
        self.weights_path = str(path)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        """uint8 images (B, 3, H, W) of any size -> pool features (B, 2048), logits_unbiased (B, 1008), float64."""
        self.check_input(images)
        with torch.autocast(self.device.type, enabled=False):  # float64 inside, whatever the caller's precision
            features, logits = self.net(images.to(self.device))
        return Features(features.double(), logits.double())


def create_extractor(
    name: str, device: torch.device | str = "cpu", inception_weights: str | Path | None = None
) -> FeatureExtractor:
    """``inception`` (FID) or ``fmnist`` (FD-fmnist), on ``device``."""
    if name == "inception":
        return InceptionExtractor(inception_weights).to(device)
    if name == "fmnist":
        return fmnist().to(device)
    raise ValueError(f"unknown feature extractor {name!r}; expected 'inception' or 'fmnist'")
