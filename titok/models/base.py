"""What every titok model shares: its config, the Hub mixin, and input checks of the tokenizer API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from titok.config import Config

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

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks' activations in backward (less memory, about a third more compute)."""
        for module in self.modules():
            if hasattr(type(module), "grad_checkpointing"):
                module.grad_checkpointing = enabled

    def _save_pretrained(self, save_directory: Path) -> None:
        from titok.checkpoints import save_model

        save_model(self, save_directory)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        allow_nonfinite: bool = False,
        **hub_kwargs: Any,
    ) -> TitokModel:
        """Load a model saved by ``save_pretrained`` (a folder or a Hub id) or in the reference layout.

        ``hub_kwargs`` go to ``huggingface_hub.hf_hub_download`` (``revision``, ``cache_dir``, ``token``,
        ``local_files_only``, ``force_download``). Raises ``TypeError`` if the files hold another kind of model,
        ``ValueError`` if the weights hold NaN or infinite values (unless ``allow_nonfinite``).
        """
        from titok.checkpoints import load

        model = load(pretrained_model_name_or_path, device=device, allow_nonfinite=allow_nonfinite, **hub_kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{pretrained_model_name_or_path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


class ImageTokenizer(TitokModel):
    """Images (B, 3, H, W) float in [0, 1] <-> codes (B, N) int64.

    Subclasses define ``encode(images)``, ``quantize(latents)``, ``decode(latents)`` and ``detokenize(codes)``.
    """

    image_size: int
    num_tokens: int
    codebook_size: int | None

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

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) float in [0, 1] -> codes (B, N) int64."""
        self.check_images(images)
        self.check_range(images)
        return self.quantize(self.encode(images.to(self.device))).codes
