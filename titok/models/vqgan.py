"""The 2-D MaskGIT-VQGAN: a convolutional encoder, a 1024 x 256 codebook and a convolutional decoder.

It is TiTok's proxy-code teacher (stage 1), its pixel decoder (stage 2), and a 2-D tokenizer of its own: a
``(B, 3, H, W)`` image in [0, 1] becomes ``(H/16) * (W/16)`` codes in raster order. There is no attention.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from titok.config import Config
from titok.models.base import ImageTokenizer, architecture
from titok.quantizers import QuantizerOutput, VectorQuantizer


@dataclass(frozen=True)
class VQGANConfig(Config):
    """Sizes of a MaskGIT-VQGAN. Defaults are the released ImageNet model (54.5M parameters)."""

    image_size: int = 256
    hidden_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 1024
    commitment_cost: float = 0.25
    norm_groups: int = 32

    def __post_init__(self) -> None:
        factor = self.downsample_factor
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the downsampling factor {factor}")
        for ch in {self.hidden_channels * m for m in self.channel_mult}:
            if ch % self.norm_groups:
                raise ValueError(f"{ch} channels cannot be split into norm_groups={self.norm_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.downsample_factor) ** 2


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


def cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout on the CPU, oneDNN's preferred one (the pixel decoder ran 1.2-1.5x faster in
    it); unchanged elsewhere (not measured on GPUs yet). Convolutions, GroupNorm and SiLU keep the layout."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a skip.

    When the channel count changes, MaskGIT's block has no path from its input: its 1x1 ``nin_shortcut``
    (out x out) is applied to the block's own output, giving ``h + nin(h)``. The released weights were trained
    this way, so this class keeps it; with equal channels the skip is the usual ``x + h``.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(h)
        return h + skip


class _Level(nn.Module):
    """One resolution level: ``num_res_blocks`` residual blocks."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, groups: int) -> None:
        super().__init__()
        chans = [in_ch] + [out_ch] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, groups) for a, b in itertools.pairwise(chans))


class VQGANEncoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, z_channels, H/f, W/f) with f = 2^(levels - 1)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g, h = cfg.norm_groups, cfg.hidden_channels
        chans = [h * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(3, h, 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            _Level(chans[i - 1] if i else h, chans[i], cfg.num_res_blocks, g) for i in range(len(chans))
        )
        self.mid = nn.ModuleList(ResnetBlock(chans[-1], chans[-1], g) for _ in range(2))
        self.norm_out = _norm(chans[-1], g)
        self.conv_out = nn.Conv2d(chans[-1], cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(cpu_channels_last(x))
        for i, level in enumerate(self.down):
            for block in level.block:
                x = block(x)
            if i < len(self.down) - 1:
                x = F.avg_pool2d(x, 2)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()


class _UpLevel(_Level):
    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, groups: int, upsample: bool) -> None:
        super().__init__(in_ch, out_ch, num_blocks, groups)
        self.upsample_conv = nn.Conv2d(out_ch, out_ch, 3, padding=1) if upsample else None


class VQGANDecoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h*f, w*f), nominally in [0, 1] (not clamped)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g, h = cfg.norm_groups, cfg.hidden_channels
        chans = [h * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.z_channels, chans[-1], 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(chans[-1], chans[-1], g) for _ in range(2))
        # Stored in level order 0..L-1 (as the released weights are) but run from the coarsest level down.
        self.up = nn.ModuleList(
            _UpLevel(chans[min(i + 1, len(chans) - 1)], chans[i], cfg.num_res_blocks, g, upsample=i > 0)
            for i in range(len(chans))
        )
        self.norm_out = _norm(chans[0], g)
        self.conv_out = nn.Conv2d(chans[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(cpu_channels_last(z))
        for block in self.mid:
            x = block(x)
        for level in reversed(self.up):
            for block in level.block:
                x = block(x)
            if level.upsample_conv is not None:
                x = level.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()


@dataclass
class VQGANOutput:
    """``decoded``: images (B, 3, H, W), raw; ``latents``: the quantized latents (B, h*w, C) the decoder read (with
    the straight-through gradient); ``quantizer``: codes and VQ losses."""

    decoded: torch.Tensor
    latents: torch.Tensor
    quantizer: QuantizerOutput


@architecture
class MaskGITVQGAN(ImageTokenizer):
    """The 2-D MaskGIT-VQGAN tokenizer. Latents are (B, h*w, z_channels), token-major in raster order."""

    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VQGANEncoder(config)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.z_channels, commitment_cost=config.commitment_cost
        )
        self.decoder = VQGANDecoder(config)

    def check_image_size(self, height: int, width: int) -> None:
        """The VQGAN is convolutional: any size whose sides are multiples of the downsampling factor."""
        f = self.config.downsample_factor
        if height % f or width % f:
            raise ValueError(f"image sides must be multiples of {f} for this VQGAN, got {height}x{width}")

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] (checked) -> latents (B, h*w, z_channels) before quantization."""
        z = self.encoder(images.to(self.dtype))  # (B, C, h, w)
        return z.flatten(2).transpose(1, 2)

    def quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        return self.quantizer(latents)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, h*w, z_channels) -> images (B, 3, H, W), raw (not clamped)."""
        b, n, c = latents.shape
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(f"the VQGAN decodes a square grid of latents; got {n} tokens")
        z = latents.transpose(1, 2).reshape(b, c, side, side).to(self.dtype)
        return self.decoder(z)

    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h*w) int64 -> float32 images (B, 3, H, W), raw (not clamped)."""
        return self.decode(self.quantizer.embed(codes.to(self.device))).float()

    def forward(self, images: torch.Tensor) -> VQGANOutput:
        """Encode, quantize and decode, for training."""
        q = self.quantize(self.encode(images))
        return VQGANOutput(self.decode(q.quantized), q.quantized, q)
