"""What every titok model shares: its config, the Hub mixin, and input checks of the tokenizer API."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from titok.config import Config
from titok.models import storage
from titok.skeleton import skeleton

MODEL_CARD = """---
{{ card_data }}
---

A model of `titok`, compact 1-D image tokenizers and their MaskGIT generators (TiTok: "An Image is Worth 32 Tokens
for Reconstruction and Generation", [arXiv 2406.07550]({{ paper_url }})).

```python
import titok

model = titok.load(path)  # this folder or its Hub id: config.json names the architecture, model.safetensors the weights
```
"""


class TitokModel(
    nn.Module,
    ModelHubMixin,
    library_name="titok",
    tags=["arxiv:2406.07550"],
    license="apache-2.0",
    paper_url="https://arxiv.org/abs/2406.07550",
    model_card_template=MODEL_CARD,
):
    """Base of titok's models: ``config`` is the constructor's only argument and is saved as ``config.json``.

    ``save_pretrained(dir)`` writes ``config.json`` + ``model.safetensors``; ``from_pretrained(dir or Hub id)``
    reads them back (strictly); ``push_to_hub`` uploads (huggingface_hub's ``ModelHubMixin``).
    """

    config_class: ClassVar[type[Config]]
    config: Config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def preprocess(self, images: Any) -> torch.Tensor:
        """Image files, folders or PIL images -> (B, 3, S, S) float32 in [0, 1] on the model's device, at the
        model's resolution S: the input of ``tokenize``/``encode``, the pixels every titok command and training run
        reads (see :func:`titok.load_images`)."""
        from titok.data.images import load_images

        size = getattr(self, "image_size", None)
        if size is None:
            raise TypeError(f"{type(self).__name__} reads no images (it has no image_size)")
        return load_images(images, size).to(self.device)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks' activations in backward (less memory, about a third more compute)."""
        for module in self.modules():
            if hasattr(type(module), "grad_checkpointing"):
                module.grad_checkpointing = enabled

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens  # type: ignore[attr-defined]

    @property
    def codebook_size(self) -> int | None:
        return self.config.codebook_size  # type: ignore[attr-defined]

    @classmethod
    def accepts(cls, config: Config) -> bool:
        """Whether this class is the one that ``config`` builds."""
        return isinstance(config, cls.config_class)

    def _save_pretrained(self, save_directory: Path) -> None:
        storage.save_model(self, save_directory)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        allow_nonfinite: bool = False,
        **hub_kwargs: Any,
    ) -> TitokModel:
        """Load a model saved by ``save_pretrained``: a folder or a Hub id in titok's layout.

        ``hub_kwargs`` go to ``huggingface_hub.hf_hub_download`` (``revision``, ``cache_dir``, ``token``,
        ``local_files_only``, ``force_download``). Raises ``TypeError`` if the files hold another kind of model,
        ``ValueError`` if the weights hold NaN or infinite values (unless ``allow_nonfinite``), or if the input is
        something that only ``titok.load`` reads (the reference's layouts, a bare weights file, a preset name, a
        training checkpoint).
        """
        name = pretrained_model_name_or_path
        files = storage.titok_files(name, **hub_kwargs)
        if files is None:
            raise ValueError(
                f"{name} is not a folder or Hub repo in titok's layout (config.json with format 'titok'); "
                "titok.load reads it if it is in the reference's layout, a bare weights file (with preset=), a "
                "preset name or a training checkpoint"
            )
        model = load_titok_files(*files, torch.device(device or "cpu"), allow_nonfinite)
        if not isinstance(model, cls):
            raise TypeError(f"{name} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


# The concrete model classes by name (the ``architecture`` of config.json); filled by :func:`architecture`.
ARCHITECTURES: dict[str, type[TitokModel]] = {}


def check_prefix_length(k: int, n: int, ordered: bool, untrained: str) -> int:
    """``k`` if it is an integer in [1, ``n``] (a ValueError otherwise). When ``k < n`` and the model was not trained
    on prefixes (``ordered`` false), warns with ``untrained`` (formatted with ``k`` and ``n``), pointing at the caller
    of the model's method that asked."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"num_tokens must be an integer in [1, {n}], got {k!r}")
    if k < n and not ordered:
        warnings.warn(untrained.format(k=k, n=n), stacklevel=4)
    return k


def architecture(cls: type[TitokModel]) -> type[TitokModel]:
    """Class decorator: a model class that ``config.json`` may name."""
    ARCHITECTURES[cls.__name__] = cls
    return cls


def config_of(meta: dict[str, Any], source: str) -> tuple[type[TitokModel], Config]:
    """The class and config that a titok ``config.json`` (parsed) names."""
    arch = meta.get("architecture")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"{source}: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    storage.check_format_version(meta, source)
    model_cls = ARCHITECTURES[arch]
    config = model_cls.config_class.from_dict(meta.get("config", {}), where=f"{source}: config")
    if not model_cls.accepts(config):
        raise ValueError(f"{source}: architecture {arch!r} does not match its config")
    return model_cls, config


def instantiate(
    model_cls: type[TitokModel],
    config: Config,
    state: dict[str, torch.Tensor],
    source: str,
    origin: dict[str, str] | None = None,
    allow_nonfinite: bool = False,
) -> TitokModel:
    """Build ``model_cls(config)`` without random initialisation and load ``state`` into it strictly; weights that
    are not finite are refused unless ``allow_nonfinite``."""
    with skeleton():  # meta tensors, without the compiler stack that meta kernels import
        model = model_cls(config)  # type: ignore[call-arg]
    storage.load_state(model, state, source, origin, allow_nonfinite)
    return model.eval()


def from_titok_config(
    meta: dict[str, Any], state: dict[str, torch.Tensor], config_path: str, weights_path: str, allow_nonfinite=False
) -> TitokModel:
    """The model that titok's ``config.json`` (parsed: ``meta``) names, holding the weights ``state``."""
    model_cls, config = config_of(meta, config_path)
    return instantiate(model_cls, config, state, weights_path, None, allow_nonfinite)


def load_titok_files(
    config_path: str | Path, weights_path: str | Path, device: torch.device, allow_nonfinite: bool = False
) -> TitokModel:
    """A model from titok's ``config.json`` and its weights file."""
    meta, state = storage.read_config(config_path), storage.read_weights(weights_path, device)
    return from_titok_config(meta, state, str(config_path), str(weights_path), allow_nonfinite)


class ImageTokenizer(TitokModel):
    """Images (B, 3, H, W) float in [0, 1] <-> codes (B, N) int64.

    Subclasses define ``encode(images)``, ``quantize(latents)``, ``decode(latents)`` and ``detokenize(codes)``.
    """

    @property
    def image_size(self) -> int:
        return self.config.image_size  # type: ignore[attr-defined]

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is a float (B, 3, H, W) tensor of a size this model reads."""
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        self.check_image_size(images.shape[2], images.shape[3])

    def check_image_size(self, height: int, width: int) -> None:
        s = self.image_size
        if (height, width) != (s, s):
            raise ValueError(f"images must be {s}x{s} for this model, got {height}x{width}")

    @staticmethod
    def check_range(images: torch.Tensor) -> None:
        lo, hi = float(images.min()), float(images.max())
        if lo < -0.05 or hi > 1.05:
            raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")

    def encode(self, images: torch.Tensor) -> Any:
        """Images (B, 3, H, W) in [0, 1] -> latents before quantization (checked here, computed by ``_encode``)."""
        self.check_images(images)
        return self._encode(images)

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) float in [0, 1] -> codes (B, N) int64."""
        self.check_images(images)
        self.check_range(images)
        return self.quantize(self._encode(images.to(self.device))).codes
