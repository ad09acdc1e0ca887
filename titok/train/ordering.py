"""Training ordered tokens by tail drop: any prefix of the codes becomes an image.

With ``ordering.per`` set, each training step decodes only a prefix of the latent tokens: a kept length k for the
whole batch (One-D-Piece's "tail token drop") or for every image (FlexTok's nested dropout), drawn uniformly from
``[min_tokens, N]`` or from the powers of two up to N (N included). ``full_share`` of the draws keep all N tokens
outright, so that the full-length reconstruction (the one a fixed tokenizer is trained for) is trained as often as
asked rather than once in N draws. The decoder reads the kept tokens only (model
``tail: cut``, one k per batch) or sees a learned token in place of each dropped one (``tail: learned``). The
reconstruction must then come from the first tokens alone, so the encoder learns to put the coarse content first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from titok.config import Config
from titok.models.adaptive import candidate_lengths


@dataclass(frozen=True)
class OrderingConfig(Config):
    per: Literal["off", "batch", "image"] = "off"
    lengths: Literal["uniform", "pow2"] = "uniform"
    min_tokens: int = 1
    full_share: float = 0.0  # share of draws that keep all N tokens; the rest come from ``lengths``

    def __post_init__(self) -> None:
        if self.min_tokens < 1:
            raise ValueError(f"ordering.min_tokens must be at least 1, got {self.min_tokens}")
        if not 0.0 <= self.full_share <= 1.0:
            raise ValueError(f"ordering.full_share must lie in [0, 1], got {self.full_share}")

    def check(self, model: dict) -> None:
        """Raise ``ValueError`` unless the recipe's model config (a dict of TiTokConfig fields) fits this ordering."""
        if self.per == "off":
            return
        if not model.get("ordered"):
            raise ValueError("ordering.per is on: set model.ordered=true (the exported model then says it is ordered)")
        if self.per == "image" and model.get("tail") != "learned":
            raise ValueError("ordering.per=image drops a different tail per image: it needs model.tail=learned")
        n = model.get("num_tokens")
        if n is not None and self.min_tokens > n:
            raise ValueError(f"ordering.min_tokens {self.min_tokens} exceeds the model's {n} tokens")


def draw_lengths(cfg: OrderingConfig, batch: int, num_tokens: int, generator: torch.Generator) -> torch.Tensor | None:
    """Kept lengths (B,) int64 for one step (all equal when ``per`` is batch); None when ordering is off."""
    if cfg.per == "off":
        return None
    choices = candidate_lengths(num_tokens, cfg.lengths, cfg.min_tokens)
    draws = 1 if cfg.per == "batch" else batch
    picked = choices[torch.randint(len(choices), (draws,), generator=generator, device=generator.device).cpu()]
    if cfg.full_share > 0:
        full = torch.rand(draws, generator=generator, device=generator.device).cpu() < cfg.full_share
        picked = picked.masked_fill(full, num_tokens)
    return picked.expand(batch).clone() if cfg.per == "batch" else picked
