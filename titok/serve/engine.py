"""The models behind ``titok serve`` and what the page asks of them: an upload's codes and reconstruction, the image
of edited or truncated codes, and generated samples (with the decoding's steps, if asked).

Each computation is the library's, called as the ``titok`` commands call it, so that the page shows what
``titok tokenize`` / ``reconstruct`` / ``generate`` give for the same file, seed and settings. Requests are checked
on the event loop (:meth:`Engine.decode_request`, :meth:`Engine.generate_request`); the work runs on the
:class:`~titok.serve.worker.Worker` thread inside :meth:`Engine.scope`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from titok.metrics.image import psnr
from titok.models import ImageTokenizer, MaskedGenerator
from titok.precision import Choice, resolve
from titok.sampling import MASK_SCHEDULES, SamplingConfig
from titok.serve.uploads import data_url, examples, read_upload
from titok.serve.worker import RequestError

GENERATE_BATCH = 32  # `titok generate`'s default --batch-size: the same batches draw the same random numbers
KEPT_ORIGINALS = 64  # uploads remembered for the PSNR of their edited codes
MAX_SEED = 2**53 - 1  # the largest integer a browser's JavaScript holds exactly


@dataclass(frozen=True)
class Limits:
    """What one request may ask: upload bytes and pixels, samples and steps; and how many requests may wait."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_samples: int = 64
    max_steps: int = 64
    max_pending: int = 32


@dataclass
class Reconstruction:
    """An upload tokenized: its ``id`` (for :meth:`Engine.decode`), codes, picture before and after, PSNR (dB)."""

    id: str
    name: str
    codes: list[int]
    original: str
    reconstruction: str
    psnr: float


@dataclass
class Decoded:
    """The image of (edited) codes, decoded from their first ``keep``; its PSNR against the upload, if known."""

    image: str
    keep: int
    psnr: float | None


@dataclass(frozen=True)
class GenerateRequest:
    label: int | None  # None: unconditional
    num_samples: int
    seed: int
    settings: SamplingConfig
    show_steps: bool = False


@dataclass
class Step:
    """One decoding step, for every sample: the image of that step's guess at every position, and which positions
    are kept from then on (``kept[i][j]`` is ``"1"`` or ``"0"`` for sample i, position j)."""

    step: int
    images: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


@dataclass
class Samples:
    labels: list[int | None]
    codes: list[list[int]]
    images: list[str]
    seed: int
    sampling: dict[str, Any]
    steps: list[Step]


class Engine:
    """A tokenizer (with discrete codes and a pixel decoder) and, optionally, a generator over its codes.

    ``precision``: the number format the work runs in (default fp32); ``class_names``: one per generator class,
    if known; ``names``: how the models were named (shown on the page)."""

    def __init__(
        self,
        tokenizer: ImageTokenizer,
        generator: MaskedGenerator | None = None,
        *,
        precision: Choice | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
        names: tuple[str, str] = ("", ""),
        limits: Limits = Limits(),
    ) -> None:
        check_models(tokenizer, generator)
        if generator is not None and class_names is not None and len(class_names) != generator.config.num_classes:
            raise ValueError(f"{len(class_names)} class names for a generator of {generator.config.num_classes}")
        self.tokenizer, self.generator = tokenizer.eval(), generator.eval() if generator is not None else None
        self.precision = precision or resolve("fp32", tokenizer.device)
        self.class_names, self.names, self.limits = class_names, names, limits
        self._originals: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def ordered(self) -> bool:
        return bool(getattr(self.tokenizer.config, "ordered", False))

    def scope(self) -> contextlib.ExitStack:
        """No gradients, and the chosen precision's autocast (both per thread: entered on the worker's)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.precision.autocast())
        return stack

    def info(self) -> dict[str, Any]:
        """What the page needs to draw itself."""
        tok, gen = self.tokenizer, self.generator
        about: dict[str, Any] = {
            "tokenizer": {
                "name": self.names[0],
                "num_tokens": tok.num_tokens,
                "codebook_size": tok.codebook_size,
                "image_size": tok.image_size,
                "ordered": self.ordered,
            },
            "generator": None,
            "precision": str(self.precision),
            "limits": asdict(self.limits),
            "examples": [asdict(e) for e in examples()],
        }
        if gen is not None:
            count = gen.config.num_classes
            about["generator"] = {
                "name": self.names[1],
                "num_classes": count,
                "classes": list(self.class_names or [f"class {c}" for c in range(count)]),
                "sampling": gen.config.sampling.to_dict(),
                "mask_schedules": list(MASK_SCHEDULES),
            }
        return about

    def tokenize(self, data: bytes, name: str) -> Reconstruction:
        """An uploaded file -> its codes and reconstruction, as ``titok tokenize`` and ``titok reconstruct`` give."""
        image = read_upload(data, name, self.tokenizer.image_size, self.limits.max_pixels)[None]
        codes = self.tokenizer.tokenize(image)
        recon = self.tokenizer.detokenize(codes).float().cpu()
        key = uuid.uuid4().hex
        self._originals[key] = image
        while len(self._originals) > KEPT_ORIGINALS:
            self._originals.popitem(last=False)
        return Reconstruction(
            id=key,
            name=name,
            codes=codes[0].tolist(),
            original=data_url(image[0]),
            reconstruction=data_url(recon[0].clamp(0, 1)),
            psnr=float(psnr(recon, image)[0]),
        )

    def decode_request(self, payload: Any) -> tuple[torch.Tensor, int, str | None]:
        """``{"codes": [N ints], "keep": k (default N), "image": id (optional)}`` -> (codes (1, N), k, id)."""
        payload = _object(payload, {"codes", "keep", "image"})
        n, size = self.tokenizer.num_tokens, self.tokenizer.codebook_size
        codes = payload.get("codes")
        if not isinstance(codes, list) or len(codes) != n:
            raise RequestError(400, f"codes must be a list of this tokenizer's {n} codes, got {_short(codes)}")
        for position, code in enumerate(codes):
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < size:
                raise RequestError(400, f"code {code!r} at position {position} is not an integer in [0, {size})")
        keep = _integer(payload, "keep", 1, n, default=n)
        if keep < n and not self.ordered:
            raise RequestError(400, f"this tokenizer is not ordered: it decodes all {n} of its tokens, not {keep}")
        image = payload.get("image")
        if image is not None and not isinstance(image, str):
            raise RequestError(400, f"image must be the id that tokenize returned, got {_short(image)}")
        return torch.tensor([codes]), keep, image

    def decode(self, codes: torch.Tensor, keep: int, image: str | None = None) -> Decoded:
        """The image of the first ``keep`` of ``codes`` (1, N); with ``image`` (an upload's id), its PSNR."""
        recon = self.tokenizer.detokenize(codes[:, :keep]).float().cpu()
        original = self._originals.get(image) if image is not None else None
        score = None if original is None else float(psnr(recon, original)[0])
        return Decoded(image=data_url(recon[0].clamp(0, 1)), keep=keep, psnr=score)

    def generate_request(self, payload: Any) -> GenerateRequest:
        """``{"label": class or null, "num_samples", "seed", "show_steps", "sampling": {reference names}}``, checked;
        settings not given are the generator's own."""
        gen = self.generator
        if gen is None:
            raise RequestError(400, "no generator is loaded: start titok serve with --generator MODEL")
        payload = _object(payload, {"label", "num_samples", "seed", "show_steps", "sampling"})
        label = payload.get("label")
        if label is not None:
            label = _integer(payload, "label", 0, gen.config.num_classes - 1)
        show_steps = payload.get("show_steps", False)
        if not isinstance(show_steps, bool):
            raise RequestError(400, f"show_steps must be true or false, got {_short(show_steps)}")
        sampling = _object(payload.get("sampling", {}), {f.name for f in fields(SamplingConfig)}, "sampling")
        try:
            settings = gen.config.sampling.replace(**sampling)
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        if settings.num_sample_steps > self.limits.max_steps:
            raise RequestError(400, f"at most {self.limits.max_steps} steps, got {settings.num_sample_steps}")
        return GenerateRequest(
            label=label,
            num_samples=_integer(payload, "num_samples", 1, self.limits.max_samples, default=8),
            seed=_integer(payload, "seed", 0, MAX_SEED, default=0),
            settings=settings,
            show_steps=show_steps,
        )

    def generate(self, request: GenerateRequest) -> Samples:
        """Samples as ``titok generate --classes LABEL --per-class NUM_SAMPLES --seed SEED`` (or
        ``--unconditional NUM_SAMPLES``) draws them with the same settings: the same batches, one random stream."""
        gen, tok, total = self.generator, self.tokenizer, request.num_samples
        assert gen is not None
        labels = None if request.label is None else torch.tensor([request.label]).repeat_interleave(total)
        rng = torch.Generator(gen.device).manual_seed(request.seed)
        codes, images, seen = [], [], []
        watch = (lambda step, kept, guess: seen.append((step, kept, guess))) if request.show_steps else None
        for low in range(0, total, GENERATE_BATCH):
            n = min(GENERATE_BATCH, total - low)
            batch = None if labels is None else labels[low : low + n]
            codes.append(gen.generate(batch, num_samples=n, sampling=request.settings, generator=rng, on_step=watch))
            images.append(tok.detokenize(codes[-1]).clamp(0, 1).float().cpu())
        return Samples(
            labels=[request.label] * total,
            codes=torch.cat(codes).tolist(),
            images=[data_url(image) for image in torch.cat(images)],
            seed=request.seed,
            sampling=request.settings.to_dict(),
            steps=self._steps(seen, request.settings.num_sample_steps),
        )

    def _steps(self, seen: list[tuple[int, torch.Tensor, torch.Tensor]], count: int) -> list[Step]:
        """The watched steps of every batch, gathered per step."""
        steps = [Step(step + 1) for step in range(count)] if seen else []
        mask = self.generator.mask_token_id if self.generator is not None else -1
        for step, kept, guess in seen:
            images = self.tokenizer.detokenize(guess).clamp(0, 1).float().cpu()
            steps[step].images.extend(data_url(image) for image in images)
            steps[step].kept.extend("".join("0" if c == mask else "1" for c in row) for row in kept.tolist())
        return steps


def check_models(tokenizer: Any, generator: Any) -> None:
    """``ValueError`` unless ``tokenizer`` has discrete codes and decodes pixels, and ``generator`` (if any) is a
    generator over exactly its codes."""
    if not isinstance(tokenizer, ImageTokenizer):
        raise ValueError(f"the tokenizer is a {type(tokenizer).__name__}, not a tokenizer")
    if tokenizer.codebook_size is None:
        raise ValueError("the tokenizer is continuous (VAE): it has no codes to show")
    if getattr(tokenizer.config, "head", None) == "proxy":
        raise ValueError("the tokenizer is a stage-1 one (proxy codes): it does not decode pixels")
    if generator is None:
        return
    if not isinstance(generator, MaskedGenerator):
        raise ValueError(f"the generator is a {type(generator).__name__}, not a generator")
    if (tokenizer.codebook_size, tokenizer.num_tokens) != (generator.codebook_size, generator.num_tokens):
        raise ValueError(
            f"the generator models {generator.num_tokens} codes of {generator.codebook_size}; the tokenizer has "
            f"{tokenizer.num_tokens} codes of {tokenizer.codebook_size}"
        )


def _object(payload: Any, allowed: set[str], what: str = "the request") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise RequestError(400, f"{what} must be a JSON object, got {_short(payload)}")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise RequestError(400, f"{what} has unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return payload


def _integer(payload: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"{key} must be an integer in [{low}, {high}], got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
