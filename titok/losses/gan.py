"""The adversarial part of the tokenizer losses: the reference's PatchGAN-style discriminator, hinge losses and the
LeCam regulariser.

The discriminator reads images (B, 3, H, W) in [0, 1] (no normalisation, as in the reference) and returns patch
logits (B, 1, P, P). Its module names follow the reference (``block_in``, ``blocks.{i}``, ``to_logits``), so a
discriminator state dict of the reference loads into it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding along one axis: (before, after), the extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A convolution with 'SAME' padding computed from the input size: output side = ceil(input side / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return super().forward(F.pad(x, [left, right, top, bottom]))


class BlurDownsample(nn.Module):
    """Halve the resolution with a depthwise blur: the normalised outer product of ``taps`` (default (1, 3, 3, 1)),
    stride 2, 'SAME' padding."""

    def __init__(self, taps: tuple[int, ...] = (1, 3, 3, 1)) -> None:
        super().__init__()
        k = torch.tensor(taps, dtype=torch.float32)
        kernel = k[None, :] * k[:, None]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])  # (1, 1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.shape[-1]
        top, bottom = same_padding(x.shape[-2], k, 2)
        left, right = same_padding(x.shape[-1], k, 2)
        x = F.pad(x, [left, right, top, bottom])
        weight = self.kernel.to(x.dtype).expand(x.shape[1], -1, -1, -1)
        return F.conv2d(x, weight, stride=2, groups=x.shape[1])


class NLayerDiscriminator(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> patch logits (B, 1, pool_size, pool_size).

    A 5x5 stem, ``num_stages`` stages of (3x3 conv, blur downsampling, GroupNorm, LeakyReLU 0.1) doubling the width
    from the second stage on, an adaptive max-pool to ``pool_size`` and a 1x1 + 5x5 conv head. The defaults are the
    reference's (1,909,889 parameters); smaller ``hidden_channels``/``norm_groups`` make tiny test models.
    """

    def __init__(
        self,
        in_channels: int = 3,
        hidden_channels: int = 128,
        num_stages: int = 3,
        norm_groups: int = 32,
        pool_size: int = 16,
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"the discriminator needs at least one stage, got num_stages={num_stages}")
        mult = (1, *(2**i for i in range(num_stages)))  # stage i maps mult[i] -> mult[i + 1] times the width
        chans = [hidden_channels * m for m in mult]
        if any(c % norm_groups for c in chans):
            raise ValueError(f"discriminator widths {chans[1:]} cannot be split into norm_groups={norm_groups}")
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
        self.block_in = nn.Sequential(Conv2dSame(in_channels, hidden_channels, 5), act())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                Conv2dSame(chans[i], chans[i + 1], 3), BlurDownsample(), nn.GroupNorm(norm_groups, chans[i + 1]), act()
            )
            for i in range(num_stages)
        )
        self.pool = nn.AdaptiveMaxPool2d(pool_size)
        self.to_logits = nn.Sequential(Conv2dSame(chans[-1], chans[-1], 1), act(), Conv2dSame(chans[-1], 1, 5))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.block_in(images)
        for block in self.blocks:
            x = block(x)
        return self.to_logits(self.pool(x))


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss, ``(mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2`` (a scalar)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN, ``-mean D(x_hat)`` (a scalar)."""
    return -fake_logits.mean()


class LeCam(nn.Module):
    """LeCam regularisation (Tseng et al. 2021) with exponential moving averages of the mean logits.

    ``loss(m_real, m_fake) = relu(m_real - ema_fake)^2 + relu(ema_real - m_fake)^2`` with the batch-mean logits
    ``m`` and the averages as they were before this batch; ``update`` then moves the averages,
    ``ema <- decay * ema + (1 - decay) * m``. The averages are buffers (saved with ``state_dict``), 0 at first.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real_logits_mean", torch.zeros(()))
        self.register_buffer("ema_fake_logits_mean", torch.zeros(()))

    def loss(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> torch.Tensor:
        """``real_mean``/``fake_mean``: scalar batch means of the discriminator's logits -> a scalar loss."""
        return F.relu(real_mean - self.ema_fake_logits_mean).pow(2) + F.relu(self.ema_real_logits_mean - fake_mean).pow(
            2
        )

    @torch.no_grad()
    def update(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> None:
        self.ema_real_logits_mean.lerp_(real_mean.detach().float(), 1.0 - self.decay)
        self.ema_fake_logits_mean.lerp_(fake_mean.detach().float(), 1.0 - self.decay)
