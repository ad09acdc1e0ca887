"""TiTok's 2-D twin: the same ViT, with one token per patch instead of N learnable latent tokens.

The encoder quantizes its patch outputs directly (a ViT-VQGAN-style 2-D tokenizer); the decoder reads the grid of
quantized tokens at their patch positions. With ``layout="2d"`` a :class:`~titok.models.tokenizer.TiTok` is built from
these, so the two can be compared at the same token budget (``num_tokens = grid_size ** 2``).
"""

from __future__ import annotations

import torch
from torch import nn

from titok.layers import Block, BlockStack
from titok.models.tokenizer_config import TiTokConfig


class GridEncoder(nn.Module):
    """Images (B, 3, S, S) -> latents (B, G, token_dim), one per patch in raster order (2x for VAE)."""

    def __init__(self, cfg: TiTokConfig) -> None:
        super().__init__()
        vit, w = cfg.encoder, cfg.encoder.width
        self.patch_embed = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(w**-0.5 * torch.randn(cfg.grid_size**2, w))
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = BlockStack(Block(w, vit.num_heads, vit.mlp_dim) for _ in range(vit.depth))
        self.norm_post = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg.token_dim * (2 if cfg.quantizer == "vae" else 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed  # (B, G, W)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.proj(self.norm_post(x))


class GridDecoder(nn.Module):
    """Latents (B, G, token_dim) at their patch positions -> features (B, G, width) for the head."""

    def __init__(self, cfg: TiTokConfig) -> None:
        super().__init__()
        vit, w = cfg.decoder, cfg.decoder.width
        self.embed = nn.Linear(cfg.token_dim, w)
        self.pos_embed = nn.Parameter(w**-0.5 * torch.randn(cfg.grid_size**2, w))
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = BlockStack(Block(w, vit.num_heads, vit.mlp_dim) for _ in range(vit.depth))
        self.norm_post = nn.LayerNorm(w)

    def forward(self, latents: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if keep is not None:
            raise ValueError("a 2-D tokenizer decodes all of its tokens: it takes no kept lengths")
        x = self.norm_pre(self.embed(latents) + self.pos_embed)
        x = self.blocks(x)
        return self.norm_post(x)
