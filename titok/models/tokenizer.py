"""TiTok: a ViT encoder reads the image's patches with N learnable latent tokens; their outputs are quantized
(or, for continuous tokenizers, a Gaussian posterior); a ViT decoder reads the N tokens with one mask token per
patch and a head turns the mask-token outputs into pixels.

Heads:
  ``pixels``  a linear patch head with depth-to-space and a 3x3 conv (single-stage checkpoints);
  ``proxy``   logits over a 2-D VQGAN's codebook per patch (stage 1: "proxy codes");
  ``vqgan``   proxy logits -> softmax x the VQGAN codebook -> the VQGAN's pixel decoder (two-stage checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from titok.layers import Attention, Block, BlockStack
from titok.models.adaptive import AdaptiveCodes, decode_ragged, tokenize_adaptive
from titok.models.base import ImageTokenizer, architecture, check_prefix_length
from titok.models.grid import GridDecoder, GridEncoder
from titok.models.tokenizer_config import TiTokConfig
from titok.models.vqgan import MaskGITVQGAN, VQGANConfig, VQGANDecoder
from titok.quantizers import DiagonalGaussian, FiniteScalarQuantizer, QuantizerOutput, VectorQuantizer
from titok.skeleton import skeleton


class LegacyTokenOrder(nn.Module):
    """The released two-stage checkpoints' (L-32, B-64, S-128) token scramble, applied before the projection.

    Their encoder re-read its (N, W) matrix of latent-token outputs in memory as (W, N) instead of transposing it,
    so token j of the projection's input gathers features of every token. The weights were trained with it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        return x.reshape(b, w, n).transpose(1, 2)  # (B, N, W), scrambled


class TiTokEncoder(nn.Module):
    """Images (B, 3, S, S) -> latents (B, N, token_dim), or (B, N, 2 * token_dim) (mean | log-variance) for VAE."""

    def __init__(self, cfg: TiTokConfig) -> None:
        super().__init__()
        vit, w = cfg.encoder, cfg.encoder.width
        scale = w**-0.5
        self.patch_embed = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size)
        self.class_token = nn.Parameter(scale * torch.randn(w))
        self.pos_embed = nn.Parameter(scale * torch.randn(cfg.grid_size**2 + 1, w))
        self.latent_tokens = nn.Parameter(scale * torch.randn(cfg.num_tokens, w))
        self.latent_pos_embed = nn.Parameter(scale * torch.randn(cfg.num_tokens, w))
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = BlockStack(Block(w, vit.num_heads, vit.mlp_dim) for _ in range(vit.depth))
        self.norm_post = nn.LayerNorm(w)
        self.token_order = LegacyTokenOrder() if cfg.legacy_token_order else nn.Identity()
        out_dim = cfg.token_dim * (2 if cfg.quantizer == "vae" else 1)
        self.proj = nn.Linear(w, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, G, W), patches in raster order
        x = torch.cat([self.class_token.expand(b, 1, -1), x], dim=1) + self.pos_embed
        latents = (self.latent_tokens + self.latent_pos_embed).expand(b, -1, -1)
        x = self.norm_pre(torch.cat([x, latents], dim=1))  # [class | patches | latents]
        x = self.blocks(x, rows=slice(-latents.shape[1], None))  # the last block computes the latents' rows only
        x = self.norm_post(x)  # (B, N, W)
        return self.proj(self.token_order(x))


class TiTokDecoder(nn.Module):
    """Latents (B, N, token_dim) -> mask-token features (B, G, width), one per patch in raster order.

    A prefix of the latents decodes too: ``latents`` (B, k, D) with k <= N, or all N with ``keep`` (B,) giving each
    image's kept length. Tail ``"cut"``: the decoder reads only the kept tokens (one k for the whole batch);
    ``"learned"``: each dropped token is replaced by a learned one (its position embedding added), per image.
    """

    def __init__(self, cfg: TiTokConfig) -> None:
        super().__init__()
        vit, w = cfg.decoder, cfg.decoder.width
        scale = w**-0.5
        self.embed = nn.Linear(cfg.token_dim, w)
        self.class_token = nn.Parameter(scale * torch.randn(w))
        self.pos_embed = nn.Parameter(scale * torch.randn(cfg.grid_size**2 + 1, w))
        self.mask_token = nn.Parameter(scale * torch.randn(w))
        self.latent_pos_embed = nn.Parameter(scale * torch.randn(cfg.num_tokens, w))
        self.tail_token = nn.Parameter(scale * torch.randn(w)) if cfg.tail == "learned" else None
        self.norm_pre = nn.LayerNorm(w)
        self.blocks = BlockStack(Block(w, vit.num_heads, vit.mlp_dim) for _ in range(vit.depth))
        self.norm_post = nn.LayerNorm(w)

    def forward(self, latents: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, g = latents.shape[0], self.pos_embed.shape[0] - 1
        z = self._tokens(latents, keep)  # (B, k or N, W)
        queries = torch.cat([self.class_token[None], self.mask_token.expand(g, -1)]) + self.pos_embed  # (G+1, W)
        x = self.norm_pre(torch.cat([queries.expand(b, -1, -1), z], dim=1))  # [class | masks | latents]
        x = self.blocks(x, rows=slice(1, g + 1))  # the last block computes the mask tokens' rows only
        return self.norm_post(x)

    def _tokens(self, latents: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        b, k = latents.shape[:2]
        n = self.latent_pos_embed.shape[0]
        z = self.embed(latents)
        if self.tail_token is None:
            if keep is not None:
                raise ValueError("a per-image number of tokens needs tail='learned'; tail 'cut' decodes one k a batch")
            return z + self.latent_pos_embed[:k]
        if k < n:  # the dropped tail, as learned tokens
            z = torch.cat([z, self.tail_token.to(z.dtype).expand(b, n - k, -1)], dim=1)
        if keep is not None:
            kept = torch.arange(n, device=z.device) < keep.to(z.device)[:, None]  # (B, N)
            z = torch.where(kept[..., None], z, self.tail_token.to(z.dtype))
        return z + self.latent_pos_embed


class ProxyCodeHead(nn.Module):
    """Features (B, G, W) -> logits (B, G, K) over a 2-D VQGAN's codebook."""

    def __init__(self, width: int, num_codes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(2 * width, num_codes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features)))


def _grid(x: torch.Tensor) -> torch.Tensor:
    """(B, G, C) raster-order tokens -> (B, C, sqrt(G), sqrt(G))."""
    b, g, c = x.shape
    side = round(g**0.5)
    return x.transpose(1, 2).reshape(b, c, side, side)


class PixelHead(nn.Module):
    """Features (B, G, W) -> images (B, 3, S, S): a linear map to each patch's pixels, then a 3x3 conv."""

    def __init__(self, width: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(width, 3 * patch_size**2)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, g, _ = features.shape
        p, side = self.patch_size, round(g**0.5)
        x = self.proj(features).view(b, side, side, p, p, 3)  # per patch: (row p1, col p2, channel)
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, side * p, side * p)
        return self.conv(x)


class VQGANPixelHead(nn.Module):
    """Features -> proxy logits -> softmax-weighted VQGAN codebook vectors -> the VQGAN's pixel decoder."""

    def __init__(self, width: int, cfg: VQGANConfig) -> None:
        super().__init__()
        self.proxy = ProxyCodeHead(width, cfg.codebook_size)
        self.codebook = nn.Embedding(cfg.codebook_size, cfg.z_channels)
        self.pixel_decoder = VQGANDecoder(cfg)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        soft = self.proxy(features).softmax(-1) @ self.codebook.weight  # (B, G, z_channels)
        return self.pixel_decoder(_grid(soft))


@dataclass
class TiTokOutput:
    """``decoded``: images (B, 3, S, S), or proxy logits (B, G, K) for the ``proxy`` head; ``latents``: what the
    decoder read (B, N, D); ``quantizer`` (VQ) or ``posterior`` (VAE)."""

    decoded: torch.Tensor
    latents: torch.Tensor
    quantizer: QuantizerOutput | None = None
    posterior: DiagonalGaussian | None = None


@architecture
class TiTok(ImageTokenizer):
    """The TiTok 1-D tokenizer: an image becomes ``num_tokens`` codes."""

    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig) -> None:
        super().__init__()
        self.config = config
        encoder, decoder = LAYOUTS[config.layout]
        self.encoder = encoder(config)
        self.decoder = decoder(config)
        self.head = HEADS[config.head](config)
        for module in (self.encoder, self.decoder, getattr(self.head, "proxy", self.head)):
            module.apply(_init_weights)
        self.quantizer = QUANTIZERS[config.quantizer](config)

    @property
    def codebook_size(self) -> int | None:
        return self.config.codebook_size if self.quantizer is not None else None

    def encode(self, images: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor | DiagonalGaussian:
        """Images (B, 3, S, S) in [0, 1] -> latents (B, N, D) before quantization; for a VAE the posterior.
        ``num_tokens``: the first k tokens only, (B, k, D)."""
        self.check_images(images)
        return self._encode(images, num_tokens)

    def _encode(self, images: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor | DiagonalGaussian:
        z = self.encoder(images.to(self.dtype))
        if num_tokens is not None:
            z = z[:, : self.check_prefix(num_tokens)]
        return DiagonalGaussian(z) if self.config.quantizer == "vae" else z

    @torch.no_grad()
    def tokenize(
        self, images: torch.Tensor, num_tokens: int | None = None, *, quality=None, candidates="all", batch_size=64
    ) -> torch.Tensor | AdaptiveCodes:
        """Images (B, 3, S, S) float in [0, 1] -> codes (B, N) int64, or the first ``num_tokens`` (B, k).

        ``quality`` (a :class:`Quality`, ``{"psnr": 30}`` or ``"psnr=30"``): per image the fewest tokens whose
        reconstruction meets it, among ``candidates`` (``"all"`` 1..N, ``"pow2"``, or a list), decoding up to
        ``batch_size`` rows at a time; returns :class:`AdaptiveCodes` (codes padded with -1, lengths (B,)). See
        :mod:`titok.models.adaptive`."""
        if quality is not None:
            if num_tokens is not None:
                raise ValueError("give num_tokens (one length for all) or quality (a length per image), not both")
            return tokenize_adaptive(self, images, quality, candidates, batch_size)
        codes = super().tokenize(images)
        return codes if num_tokens is None else codes[:, : self.check_prefix(num_tokens)]

    def quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """Latents (B, N, D) -> codes, quantized latents and the VQ losses."""
        if self.quantizer is None:
            raise ValueError("this tokenizer is continuous (quantizer 'vae'): it has no codes; use encode()")
        return self.quantizer(latents)

    def decode(self, latents: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, k, D), k <= N (a prefix of the tokens) -> images (B, 3, S, S), raw decoder output (not
        clamped). ``keep`` (B,): each image's kept length (tail ``learned`` only)."""
        if self.config.head == "proxy":
            raise ValueError(
                "this stage-1 tokenizer predicts proxy codes of a 2-D VQGAN, not pixels: use proxy_logits(), "
                "and decode their argmax with the VQGAN teacher"
            )
        return self.head(self.decoder(self._check_latents(latents), keep))

    def proxy_logits(self, latents: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, k, D), k <= N -> logits (B, G, K) over the proxy VQGAN's codes, patches in raster order."""
        head = getattr(self.head, "proxy", self.head)
        if not isinstance(head, ProxyCodeHead):
            raise ValueError("this tokenizer's decoder predicts pixels directly; it has no proxy-code logits")
        return head(self.decoder(self._check_latents(latents), keep))

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, k) int64, k <= N (a prefix) -> float32 images (B, 3, S, S), raw decoder output (clamping is the
        caller's). ``lengths`` (B,): ragged rows, row i's first ``lengths[i]`` codes (``AdaptiveCodes``)."""
        if self.quantizer is None:
            raise ValueError("this tokenizer is continuous (quantizer 'vae'): decode latents with decode()")
        if lengths is not None:
            return decode_ragged(self, codes, lengths)
        codes = codes.to(self.device)
        if codes.ndim != 2 or not 1 <= codes.shape[1] <= self.num_tokens:
            raise ValueError(f"codes must have shape (B, k) with 1 <= k <= {self.num_tokens}, got {tuple(codes.shape)}")
        return self.decode(self.quantizer.embed(codes)).float()

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, keep: torch.Tensor | None = None
    ) -> TiTokOutput:
        """Encode, quantize (or sample the posterior with ``generator``) and decode, for training. ``keep`` (B,):
        decode only each image's first ``keep[i]`` tokens (training ordered tokens by tail drop); with tail
        ``cut`` every entry must be equal."""
        encoded = self.encode(images)
        if isinstance(encoded, DiagonalGaussian):
            latents = encoded.sample(generator)
            return TiTokOutput(self._decode_kept(latents, keep), latents, posterior=encoded)
        q = self.quantize(encoded)
        return TiTokOutput(self._decode_kept(q.quantized, keep), q.quantized, quantizer=q)

    def _decode_kept(self, latents: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        latents = latents.to(self.dtype)
        if keep is not None and self.config.tail == "cut":
            k = int(keep[0])
            if not bool((keep == k).all()):
                raise ValueError("tail 'cut' drops one number of tokens per batch; per-image drops need 'learned'")
            latents, keep = latents[:, :k], None
        return self.head(self.decoder(latents, keep))

    def check_prefix(self, k: int) -> int:
        """``k`` if 1 <= k <= N (a ValueError otherwise); warns once when this model was not trained for prefixes."""
        untrained = (
            "this tokenizer was not trained with tail drops (ordered=false): {k} of its {n} tokens may decode poorly"
        )
        return check_prefix_length(k, self.num_tokens, self.config.ordered, untrained)

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        n, d = self.num_tokens, self.config.token_dim
        if latents.ndim != 3 or latents.shape[2] != d or not 1 <= latents.shape[1] <= n:
            raise ValueError(f"latents must have shape (B, k, {d}) with 1 <= k <= {n}, got {tuple(latents.shape)}")
        if latents.shape[1] < n:
            if self.config.layout == "2d":
                raise ValueError(f"a 2-D tokenizer decodes all {n} of its tokens, got {latents.shape[1]}")
            self.check_prefix(latents.shape[1])
        return latents.to(self.device, self.dtype)


QUANTIZERS = {
    "vq": lambda cfg: VectorQuantizer(
        cfg.codebook_size, cfg.token_dim, l2_norm=cfg.l2_norm, commitment_cost=cfg.commitment_cost
    ),
    "fsq": lambda cfg: FiniteScalarQuantizer(cfg.fsq_levels),
    "vae": lambda cfg: None,
}
LAYOUTS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "1d": (TiTokEncoder, TiTokDecoder),
    "2d": (GridEncoder, GridDecoder),
}
HEADS = {
    "pixels": lambda cfg: PixelHead(cfg.decoder.width, cfg.patch_size),
    "proxy": lambda cfg: ProxyCodeHead(cfg.decoder.width, cfg.proxy_codebook_size),
    "vqgan": lambda cfg: VQGANPixelHead(cfg.decoder.width, cfg.pixel_decoder),
}


def check_proxy_teacher(cfg: TiTokConfig, teacher: VQGANConfig) -> None:
    """Raise ``ValueError`` unless the 2-D VQGAN ``teacher``'s codes can be the proxy codes of tokenizer ``cfg``:
    the same resolution, one teacher code per tokenizer patch (downsampling factor == patch size), and as many
    codes as the proxy head predicts."""
    if teacher.image_size != cfg.image_size:
        raise ValueError(f"the teacher VQGAN reads {teacher.image_size} px images, the tokenizer {cfg.image_size} px")
    t_grid, grid = teacher.image_size // teacher.downsample_factor, cfg.grid_size
    if t_grid != grid:
        raise ValueError(
            f"the teacher VQGAN gives a {t_grid}x{t_grid} grid of codes (downsampling {teacher.downsample_factor}x); "
            f"the tokenizer predicts a {grid}x{grid} grid (patch_size {cfg.patch_size})"
        )
    if teacher.codebook_size != cfg.proxy_codebook_size:
        raise ValueError(
            f"the teacher VQGAN has {teacher.codebook_size} codes; the tokenizer's proxy_codebook_size is "
            f"{cfg.proxy_codebook_size}"
        )


def two_stage_from(stage1: TiTok, vqgan: MaskGITVQGAN) -> TiTok:
    """The stage-2 tokenizer (head ``vqgan``) that starts from a stage-1 one (head ``proxy``) and its teacher.

    Encoder, latent tokens, quantizer, decoder and proxy head are copied from ``stage1``; the VQGAN's codebook
    becomes ``head.codebook`` and its decoder ``head.pixel_decoder`` (the reference's ``pixel_quantize`` and
    ``pixel_decoder``). The result is a new model on the CPU; neither input is changed.
    """
    cfg = stage1.config
    if cfg.head != "proxy":
        raise ValueError(f"stage 2 starts from a stage-1 tokenizer (head 'proxy'); this one has head {cfg.head!r}")
    check_proxy_teacher(cfg, vqgan.config)
    config = cfg.replace(head="vqgan", pixel_decoder=vqgan.config)
    state = {k: v for k, v in stage1.state_dict().items() if not k.startswith("head.")}
    state.update({f"head.proxy.{k}": v for k, v in stage1.head.state_dict().items()})
    state["head.codebook.weight"] = vqgan.quantizer.embedding.weight
    state.update({f"head.pixel_decoder.{k}": v for k, v in vqgan.decoder.state_dict().items()})
    with skeleton():
        model = TiTok(config)
    model.load_state_dict({k: v.detach().cpu().clone() for k, v in state.items()}, strict=True, assign=True)
    return model


def _init_weights(m: nn.Module) -> None:
    """The reference's initialisation: truncated-normal(0.02) linear/conv weights, zero biases, unit LayerNorm,
    Xavier-uniform fused QKV (PyTorch's MultiheadAttention default)."""
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, Attention):
        nn.init.xavier_uniform_(m.qkv.weight)
        nn.init.zeros_(m.qkv.bias)
