"""Adaptive length: per image, the fewest tokens of an ordered tokenizer whose reconstruction meets a target.

``tokenizer.tokenize(images, quality=Quality(psnr=30))`` encodes once (a prefix's codes are the first codes of the
whole sequence: every token is quantized on its own), then decodes the candidate lengths in increasing order; an
image leaves as soon as a length meets every target, and keeps the first (smallest) one that did. This scan finds
the smallest passing candidate whether or not quality rises monotonically with the length (tail-drop training
makes it rise on average, not for every image, so a binary search could miss it); it costs at most one decode per
candidate and image, usually far fewer. The candidates decoded at once are batched: several lengths in one
decoder call for a ``learned`` tail (dropped tokens are replaced in place, so lengths mix in one batch), one call
per length for a ``cut`` tail (the sequence is as long as the prefix).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch

from titok.metrics.image import psnr, ssim

PAD = -1  # the codes past a row's length (titok.data.codes_file.PAD)
LPIPS_NETS = ("vgg", "alex", "squeeze")


@dataclass(frozen=True)
class Quality:
    """Per-image targets a reconstruction must meet, all of those given: ``psnr`` (dB, at least), ``ssim`` (at
    least) and ``lpips`` (at most). LPIPS is the perceptual distance TiTok's recipes train against (``lpips_net``
    ``vgg``, as their perceptual loss); it needs the ``lpips`` package and its backbone's ImageNet weights in
    torchvision's cache. Scores compare the decoder's output clamped to [0, 1] with the input images."""

    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    lpips_net: str = "vgg"

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in TARGETS if getattr(self, name) is not None}
        if not given:
            raise ValueError(f"a quality target needs at least one of {', '.join(TARGETS)}, e.g. Quality(psnr=30)")
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"quality {name} must be a finite number, got {value!r}")
        if self.ssim is not None and not -1 < self.ssim <= 1:
            raise ValueError(f"quality ssim must lie in (-1, 1], got {self.ssim}")
        if self.lpips is not None and self.lpips < 0:
            raise ValueError(f"quality lpips is a distance (at least 0), got {self.lpips}")
        if self.lpips_net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS network {self.lpips_net!r}; expected one of {list(LPIPS_NETS)}")

    @classmethod
    def of(cls, spec: Quality | Mapping[str, float] | str) -> Quality:
        """A ``Quality``, from itself, a mapping (``{"psnr": 30}``) or a string (``"psnr=30,ssim=0.9"``)."""
        if isinstance(spec, Quality):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise ValueError(f"unknown quality target {unknown[0]!r}; expected {', '.join(sorted(known))}")
            return cls(**spec)
        raise ValueError(f"quality must be a Quality, a dict or a 'psnr=30'-style string, got {type(spec).__name__}")

    @classmethod
    def parse(cls, text: str) -> Quality:
        """``"psnr=30"``, ``"psnr=30,ssim=0.9"``, ``"lpips=0.2,lpips_net=alex"`` -> a ``Quality``."""
        spec: dict[str, float | str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or not value.strip():
                raise ValueError(f"quality {text!r}: {part!r} is not NAME=VALUE (e.g. psnr=30)")
            if name == "lpips_net":
                spec[name] = value.strip()
                continue
            try:
                spec[name] = float(value)
            except ValueError:
                raise ValueError(f"quality {text!r}: {name}={value.strip()!r} is not a number") from None
        return cls.of(spec)

    def describe(self) -> str:
        parts = [f"{name} {'<=' if name == 'lpips' else '>='} {getattr(self, name):g}" for name in self.targets()]
        return ", ".join(parts) + (f" (LPIPS-{self.lpips_net})" if self.lpips is not None else "")

    def targets(self) -> list[str]:
        return [name for name in TARGETS if getattr(self, name) is not None]


TARGETS = ("psnr", "ssim", "lpips")


class _Scorer:
    """A quality's per-image scores and verdicts; loads LPIPS once."""

    def __init__(self, quality: Quality, device: torch.device) -> None:
        self.quality, self.lpips = quality, None
        if quality.lpips is not None:
            from titok.metrics.perceptual import load_lpips

            self.lpips, reason = load_lpips(quality.lpips_net, device)
            if self.lpips is None:
                raise ValueError(f"an LPIPS target needs LPIPS-{quality.lpips_net}, which cannot run here: {reason}")

    def __call__(self, recon: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(passed (B,) bool, scores {name: (B,) float64}) of reconstructions against their images."""
        from titok.metrics.perceptual import lpips_distance

        recon = recon.float().clamp(0, 1)
        images = images.to(recon.device, torch.float32)
        score = {"psnr": psnr, "ssim": ssim, "lpips": lambda x, y: lpips_distance(self.lpips, x, y)}
        scores = {name: score[name](recon, images).cpu() for name in self.quality.targets()}
        passed = torch.ones(len(recon), dtype=torch.bool)
        for name, values in scores.items():
            target = getattr(self.quality, name)
            passed &= values <= target if name == "lpips" else values >= target
        return passed, scores


@dataclass
class AdaptiveCodes:
    """Codes of different lengths: row i is ``codes[i, :lengths[i]]``, then ``PAD`` (-1) up to the longest row.

    ``met`` (B,) bool is False for an image that no candidate length brought to the target (it keeps the longest
    candidate); ``scores`` holds each target's score (B,) at the picked length."""

    codes: torch.Tensor
    lengths: torch.Tensor
    met: torch.Tensor
    scores: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self) -> list[torch.Tensor]:
        """Each image's codes, (k_i,) int64."""
        return [row[:k] for row, k in zip(self.codes, self.lengths.tolist())]


def candidate_lengths(num_tokens: int, lengths: str | Sequence[int], min_tokens: int = 1) -> torch.Tensor:
    """Prefix lengths, increasing (int64): ``"all"`` (or ``"uniform"``) ``min_tokens..N``; ``"pow2"`` the powers
    of two in that range and N; or the given lengths (each in [1, N])."""
    if lengths in ("all", "uniform"):
        return torch.arange(min_tokens, num_tokens + 1)
    if lengths == "pow2":
        powers = {1 << i for i in range(num_tokens.bit_length()) if min_tokens <= 1 << i <= num_tokens}
        return torch.tensor(sorted(powers | {num_tokens}))
    if isinstance(lengths, str):
        raise ValueError(f"candidate lengths {lengths!r}: expected 'all', 'pow2' or a list of lengths")
    given = sorted({int(k) for k in lengths})
    if not given or given[0] < 1 or given[-1] > num_tokens:
        raise ValueError(f"candidate lengths must lie in [1, {num_tokens}], got {list(lengths)}")
    return torch.tensor(given)


@torch.no_grad()
def tokenize_adaptive(
    model, images: torch.Tensor, quality, candidates: str | Sequence[int] = "all", batch_size: int = 64
) -> AdaptiveCodes:
    """Images (B, 3, S, S) in [0, 1] -> :class:`AdaptiveCodes`: per image the smallest candidate length whose
    reconstruction meets ``quality`` (see :class:`Quality`). ``batch_size``: decoder rows per call."""
    quality = Quality.of(quality)
    _check_decodes_prefixes(model)
    full = model.tokenize(images)  # (B, N)
    n = full.shape[1]
    ks = candidate_lengths(n, candidates).tolist()
    model.check_prefix(ks[0])  # says once if this model was not trained for prefixes
    scorer = _Scorer(quality, model.device)
    b = len(full)
    lengths, met = torch.full((b,), ks[-1], dtype=torch.long), torch.zeros(b, dtype=torch.bool)
    scores = {name: torch.full((b,), math.nan, dtype=torch.float64) for name in quality.targets()}
    todo = torch.arange(b)  # the images that no length tried so far brought to the target
    while len(todo) and ks:
        group, ks = _take(ks, len(todo), batch_size, model.config.tail)
        alive = torch.ones(len(todo), dtype=torch.bool)  # of todo: not yet passed at a length of this group
        for k, recon in zip(group, _decode_lengths(model, full[todo], group, batch_size)):
            rows = alive.nonzero()[:, 0]
            passed, got = scorer(recon[rows.to(recon.device)], images[todo[rows]])
            keep = passed | (k == group[-1] and not ks)  # scores to report: the picked length's, or the last one's
            for name, values in got.items():
                scores[name][todo[rows[keep]]] = values[keep]
            lengths[todo[rows[passed]]], met[todo[rows[passed]]] = k, True
            alive[rows[passed]] = False
            if not alive.any():
                break
        todo = todo[alive]
    width = int(lengths.max()) if b else n
    codes = full[:, :width].clone()
    codes[torch.arange(width, device=codes.device) >= lengths.to(codes.device)[:, None]] = PAD
    return AdaptiveCodes(codes, lengths, met, scores)


def _take(ks: list[int], images: int, batch_size: int, tail: str) -> tuple[list[int], list[int]]:
    """The next lengths to decode in one go (several for a learned tail, as many as fit ``batch_size`` rows)."""
    count = max(1, batch_size // max(images, 1)) if tail == "learned" else 1
    return ks[:count], ks[count:]


def _decode_lengths(model, codes: torch.Tensor, ks: list[int], batch_size: int) -> list[torch.Tensor]:
    """Reconstructions (B, 3, S, S) of ``codes`` (B, N) from each prefix length in ``ks``, float32."""
    if model.config.tail != "learned":
        return [_batched(lambda c, k=k: model.detokenize(c[:, :k]), codes, batch_size) for k in ks]
    rows = codes.repeat(len(ks), 1)  # (len(ks) * B, N): every image at each length
    keep = torch.tensor(ks).repeat_interleave(len(codes))
    latents = model.quantizer.embed(rows.to(model.device))
    parts = [model.decode(x, keep=k).float() for x, k in zip(latents.split(batch_size), keep.split(batch_size))]
    return list(torch.cat(parts).split(len(codes)))


def _batched(fn, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(c) for c in codes.split(batch_size)])


@torch.no_grad()
def decode_ragged(model, values: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Rows of different lengths -> images (B, 3, S, S) float32: codes (B, K) int64 (``detokenize``) or latents
    (B, K, D) (``decode``), row i's first ``lengths[i]`` entries (the rest is ignored); rows of one length decode
    together."""
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    k_max = values.shape[1]
    if lengths.shape != (len(values),) or (len(lengths) and not 1 <= int(lengths.min()) <= int(lengths.max()) <= k_max):
        raise ValueError(f"lengths must be (B,) = ({len(values)},) in [1, {k_max}], got {lengths.tolist()[:8]}")
    _check_decodes_prefixes(model)
    if not values.dtype.is_floating_point:
        values = values.clamp_min(0)  # the padding becomes a valid code; the decoder never reads it
    out: torch.Tensor | None = None
    for k in lengths.unique().tolist():
        rows = (lengths == k).nonzero()[:, 0]
        prefix = values[rows, :k]
        decode = model.detokenize if not prefix.dtype.is_floating_point else lambda x: model.decode(x).float()
        images = _batched(decode, prefix, batch_size)
        out = images.new_empty(len(values), *images.shape[1:]) if out is None else out
        out[rows.to(out.device)] = images
    if out is None:
        raise ValueError("no rows to decode")
    return out


def _check_decodes_prefixes(model) -> None:
    if getattr(model.config, "layout", "1d") != "1d":
        raise ValueError(f"a 2-D tokenizer decodes all {model.num_tokens} of its tokens: it has no shorter prefixes")
