"""Perceptual losses as the reference trains with them: LPIPS (VGG16) and the MSE between ConvNeXt-S logits.

Both need pretrained weights that titok cannot download for you when offline, so they are read from local files:

- LPIPS: torchvision's ImageNet VGG16 (``vgg16-397923af.pth``) for the trunk, and the LPIPS v0.1 linear heads
  that the ``lpips`` package ships (``lpips/weights/v0.1/vgg.pth``, the same file the reference downloads).
- ConvNeXt-S: torchvision's ImageNet ConvNeXt-Small (``convnext_small-0c510722.pth``).

By default the torchvision files are looked up where torchvision itself caches them,
``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``); a missing file is an error that names it and
says where it goes. The networks are frozen and in eval mode; gradients flow to the reconstruction only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from titok.extras import install_hint

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
CONVNEXT_S_URL = "https://download.pytorch.org/models/convnext_small-0c510722.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_cache() -> Path:
    """Where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_file(path: str | Path | None, url: str, what: str, setting: str) -> Path:
    file = Path(path) if path else torchvision_cache() / url.rsplit("/", 1)[1]
    if not file.is_file():
        raise FileNotFoundError(
            f"{what} needs the pretrained weights file {file}, which does not exist: download {url} to {file} "
            f"(or point {setting} at a copy), or switch this loss off (weight 0)"
        )
    return file


def _read_state(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same clear message
        raise ValueError(f"{file} is not a readable PyTorch weights file: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} does not hold a state_dict")
    return state


def _import_lpips():
    try:
        import lpips
    except ImportError:
        raise ImportError(f"the LPIPS loss needs the lpips package: {install_hint('train')}") from None
    return lpips


class LPIPS(nn.Module):
    """LPIPS-VGG distance per image (B,) between images (B, 3, H, W) in [0, 1], with the ``lpips`` package's
    network (inputs mapped to [-1, 1], channel-normalised features of 5 VGG16 stages, linear heads, spatial mean)."""

    def __init__(self, vgg_weights: str | Path | None = None, heads: str | Path | None = None) -> None:
        super().__init__()
        lpips = _import_lpips()
        trunk = _read_state(_weights_file(vgg_weights, VGG16_URL, "LPIPS", "losses.lpips_vgg_weights"))
        head_file = Path(heads) if heads else Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        if not head_file.is_file():
            raise FileNotFoundError(f"LPIPS needs its linear heads (vgg.pth, v0.1) at {head_file}, which is missing")
        with torch.device("meta"), warnings.catch_warnings():  # the structure only: weights come from the files
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
        net = net.to_empty(device="cpu")
        net.scaling_layer = lpips.lpips.ScalingLayer()  # its constant shift/scale buffers
        _load_vgg_slices(net.net, trunk, vgg_weights or "the VGG16 file")
        result = net.load_state_dict(_read_state(head_file), strict=False)  # the heads file holds lin0..lin4 only
        heads = {f"lin{i}.model.1.weight" for i in range(5)}
        if result.unexpected_keys or heads & set(result.missing_keys):
            wrong = sorted(result.unexpected_keys)[:3] or sorted(heads & set(result.missing_keys))[:3]
            raise ValueError(f"{head_file} is not an LPIPS v0.1 heads file (lin0..lin4): key(s) {wrong} do not fit")
        self.net = net.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.net(images.float(), targets.float(), normalize=True).flatten()


def _load_vgg_slices(vgg: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy torchvision VGG16 ``features.{i}.*`` weights into the lpips trunk, whose slices keep those indices."""
    layers = {name: module for s in vgg.children() for name, module in s.named_children()}
    for index, module in layers.items():
        for key, param in module.named_parameters():
            full = f"features.{index}.{key}"
            if full not in state:
                raise ValueError(f"{source} is not a torchvision VGG16 state_dict: it has no {full!r}")
            if state[full].shape != param.shape:
                raise ValueError(f"{source}: {full!r} has shape {tuple(state[full].shape)}, expected {param.shape}")
            with torch.no_grad():
                param.copy_(state[full])


def convnext_small(weights: str | Path | None = None) -> nn.Module:
    """torchvision's ConvNeXt-Small with ImageNet weights read from ``weights`` (default: torchvision's cache);
    images (B, 3, 224, 224) ImageNet-normalised -> logits (B, 1000)."""
    from torchvision.models import convnext_small as build

    file = _weights_file(weights, CONVNEXT_S_URL, "the ConvNeXt perceptual loss", "losses.convnext_weights")
    with torch.device("meta"):
        net = build()
    net = net.to_empty(device="cpu")
    missing, unexpected = net.load_state_dict(_read_state(file), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{file} is not a torchvision ConvNeXt-Small state_dict: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    return net.eval().requires_grad_(False)


class LogitMSE(nn.Module):
    """The reference's ConvNeXt-S perceptual term: both images resized to ``size`` (bilinear, antialiased),
    ImageNet-normalised, and the MSE between the classifier's logits (a scalar, mean over B x classes)."""

    def __init__(self, network: nn.Module, size: int = 224) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.network((x - self.mean) / self.std)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.logits(images), self.logits(targets))


class PerceptualLoss(nn.Module):
    """``lpips_weight * mean LPIPS + convnext_weight * ConvNeXt-logit MSE`` between images in [0, 1] (a scalar).

    The reference's ``"lpips-convnext_s-1.0-0.1"`` with ``perceptual_weight`` 1.1 is lpips 1.0 + convnext 0.1; its
    stage-2 ``"convnext_s"`` with weight 0.1 is lpips 0 + convnext 0.1. Use :func:`build_perceptual` to make one.
    """

    def __init__(
        self,
        lpips: nn.Module | None,
        lpips_weight: float,
        convnext: nn.Module | None,
        convnext_weight: float,
        features: nn.Module | None = None,
        features_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.lpips, self.convnext, self.features = lpips, convnext, features
        self.lpips_weight, self.convnext_weight, self.features_weight = lpips_weight, convnext_weight, features_weight

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = images.new_zeros((), dtype=torch.float32)
        if self.lpips is not None:
            total = total + self.lpips_weight * self.lpips(images, targets).mean()
        if self.convnext is not None:
            total = total + self.convnext_weight * self.convnext(images, targets)
        if self.features is not None:
            total = total + self.features_weight * self.features(images, targets)
        return total


def build_perceptual(
    lpips_weight: float,
    convnext_weight: float,
    *,
    lpips_vgg_weights: str | None = None,
    lpips_heads: str | None = None,
    convnext_weights: str | None = None,
    fmnist_feature_weight: float = 0.0,
    fmnist_feature_network: str | None = None,
) -> PerceptualLoss | None:
    """The perceptual loss with these weights, its networks read from local files (see the module docstring and
    :mod:`titok.losses.features`); ``None`` when every weight is 0 (the loss is off)."""
    if min(lpips_weight, convnext_weight, fmnist_feature_weight) < 0:
        raise ValueError(
            f"perceptual weights must be >= 0, got lpips {lpips_weight}, convnext {convnext_weight}, "
            f"fmnist_feature {fmnist_feature_weight}"
        )
    if lpips_weight == 0 and convnext_weight == 0 and fmnist_feature_weight == 0:
        return None
    lpips = LPIPS(lpips_vgg_weights, lpips_heads) if lpips_weight > 0 else None
    convnext = LogitMSE(convnext_small(convnext_weights)) if convnext_weight > 0 else None
    features = None
    if fmnist_feature_weight > 0:
        from titok.losses.features import ClassifierFeatureLoss

        if not fmnist_feature_network:
            raise ValueError("losses.fmnist_feature_weight > 0 needs losses.fmnist_feature_network (a weights file)")
        features = ClassifierFeatureLoss(fmnist_feature_network)
    return PerceptualLoss(lpips, lpips_weight, convnext, convnext_weight, features, fmnist_feature_weight)
