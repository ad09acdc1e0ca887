"""Number formats: fp32, or bf16 (fp16) autocast where the hardware computes it natively.

``auto`` picks bf16 autocast on CPUs with native bf16 matrix instructions (x86: AMX-BF16 or AVX512-BF16; ARM: the
BF16 extension, confirmed by a micro-benchmark) and on CUDA GPUs that support bf16, and fp32 everywhere else: an
AVX2-only CPU, or AVX-512 without AVX512-BF16, emulates bf16 and runs it many times slower than fp32.

The CPU is judged by its flags (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS, torch's cpuinfo elsewhere); where
no flag says, or on ARM, a one-off micro-benchmark (a matrix product in fp32 and bf16) decides, and its result is
cached per CPU model and torch version in ``$TITOK_CACHE/precision.json`` (default ``~/.cache/titok``).

Under bf16, matrix products and convolutions run in bf16; the vector quantizer's distance search, the losses and the
evaluation feature extractors always run in float32. Attention on a CPU runs in bf16 only where torch's bf16 attention
kernel measures faster than its float32 one (:func:`bf16_attention`: measured once, cached like the above), else in
float32 between bf16 projections.

>>> with titok.autocast("auto"):          # or "bf16", "fp32"
...     codes = tokenizer.tokenize(images)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_SYNONYMS = {"no": "fp32", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
X86_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 dot products (AMX tiles, AVX-512 VDPBF16PS)
MIN_SPEEDUP = 1.2  # the micro-benchmark calls bf16 native when it is at least this much faster than fp32


@dataclass(frozen=True)
class CPUSupport:
    """Whether this CPU computes bf16 natively, and why we think so."""

    native: bool
    reason: str


@dataclass(frozen=True)
class Choice:
    """A resolved precision: ``precision`` is ``fp32``, ``bf16`` or ``fp16`` on ``device_type``; ``reason`` says
    why (for ``auto``: what the hardware does)."""

    precision: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in this precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def __str__(self) -> str:
        return f"{self.precision} on {self.device_type} ({self.reason})"


def normalize(precision: str) -> str:
    """``auto``, ``fp32``, ``bf16`` or ``fp16`` (``no``, ``float32``, ``bfloat16``, ``float16`` accepted)."""
    name = _SYNONYMS.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    return name


def resolve(precision: str, device: torch.device | str = "cpu") -> Choice:
    """The concrete precision that ``precision`` means on ``device``.

    ``auto``: bf16 on CPUs with native bf16 (:func:`cpu_bf16`) and on CUDA GPUs that support bf16, else fp32.
    ``bf16`` is honoured everywhere (with a warning where it is emulated); ``fp16`` needs a CUDA GPU.
    """
    name, kind = normalize(precision), torch.device(device).type
    if kind not in ("cpu", "cuda"):
        if name not in ("auto", "fp32"):
            raise ValueError(f"precision {name!r} is supported on CPUs and CUDA GPUs, not on {kind!r}")
        return Choice("fp32", kind, f"{name}: fp32 on {kind}")
    if kind == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if name == "auto":
            return Choice("bf16" if bf16 else "fp32", kind, f"auto: the GPU {'supports' if bf16 else 'lacks'} bf16")
        return Choice(name, kind, "asked")
    if name == "fp16":
        raise ValueError("precision 'fp16' needs a CUDA GPU; on the CPU use 'bf16' or 'fp32'")
    support = cpu_bf16()
    if name == "auto":
        if not support.native:
            return Choice("fp32", kind, f"auto: {support.reason}")
        return Choice("bf16", kind, f"auto: {support.reason}; {_attention_note()}")
    if name == "bf16" and not support.native:
        logger.warning("bf16 on this CPU is emulated (%s): expect it to be slower than fp32", support.reason)
    return Choice(name, kind, "asked" if name == "fp32" else f"asked; {_attention_note()}")


@contextlib.contextmanager
def autocast(precision: str = "auto", device: torch.device | str | None = None) -> Iterator[dict[str, Choice]]:
    """Run the block in ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on ``device``'s type; without a
    device, on the CPU and, if present, on CUDA (each resolved for itself; fp16 on CUDA only). Yields
    ``{device type: Choice}``."""
    kinds = [torch.device(device).type] if device is not None else ["cpu"]
    if device is None and torch.cuda.is_available():
        kinds = ["cuda"] if normalize(precision) == "fp16" else [*kinds, "cuda"]
    choices = {kind: resolve(precision, kind) for kind in kinds}
    with contextlib.ExitStack() as stack:
        for choice in choices.values():
            stack.enter_context(choice.autocast())
        yield choices


def accelerate_precision(mixed_precision: str, cuda: bool) -> tuple[str, Choice]:
    """A recipe's ``train.mixed_precision`` (auto, no, fp32, bf16, fp16) -> accelerate's name (no, bf16, fp16) and
    the :class:`Choice` it stands for, on the GPU if ``cuda`` else on the CPU."""
    choice = resolve(mixed_precision, "cuda" if cuda else "cpu")
    return ("no" if choice.precision == "fp32" else choice.precision), choice


# --- what the CPU does ------------------------------------------------------------------------------------------


@functools.cache
def cpu_bf16() -> CPUSupport:
    """Whether this CPU computes bf16 matrix products natively (decided once per process)."""
    machine = platform.machine().lower()
    flags = cpu_flags()
    arm = machine in ("arm64", "aarch64") or machine.startswith("armv8")
    if flags is not None and not arm:
        found = [f for f in X86_BF16_FLAGS if f in flags]
        if found and torch.backends.mkldnn.is_available():
            return CPUSupport(True, f"the CPU has {' and '.join(found)}")
        if not found:
            return CPUSupport(False, "no amx_bf16 or avx512_bf16 in the CPU flags: bf16 would be emulated")
    if flags is not None and arm and "bf16" not in flags:
        return CPUSupport(False, "no bf16 in the CPU features: bf16 would be emulated")
    if flags is None and not arm and hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
            return CPUSupport(True, "torch's cpuinfo reports AMX or AVX512-BF16")
        return CPUSupport(False, "torch's cpuinfo reports neither AMX nor AVX512-BF16: bf16 would be emulated")
    why = "the CPU has bf16; measured" if flags is not None else "the CPU flags are unreadable; measured"
    speedup = cached_speedup()
    native = speedup >= MIN_SPEEDUP
    return CPUSupport(native, f"{why} bf16 {speedup:.2f}x the speed of fp32")


# bf16_attention()'s decision and the measured bf16 / float32 speed ratio it rests on (None where bf16 is emulated
# and nothing was measured); None until decided, once per process
_ATTENTION: tuple[bool, float | None] | None = None


def bf16_attention() -> bool:
    """Whether attention under bf16 autocast on this CPU should run in bf16 rather than in float32.

    torch's CPU attention kernels are faster in bf16 than in float32 only on some CPUs (with AMX tiles they can use
    them; with AVX512-BF16 alone bf16 attention measured 1.3-1.8x slower in inference and up to 6x in training), so
    this is measured: forward and backward passes of two attention shapes in each format
    (:func:`measure_attention_speedup`), once per CPU model and torch version, cached beside the matrix-product
    measurement; bf16 is chosen when it is at least as fast. Where bf16 is emulated the answer is no without
    measuring."""
    global _ATTENTION
    if _ATTENTION is None:
        speedup = _cached("bf16_attention_speedup", measure_attention_speedup) if cpu_bf16().native else None
        _ATTENTION = (speedup is not None and speedup >= 1.0, speedup)
    return _ATTENTION[0]


def bf16_attention_decided() -> bool | None:
    """:func:`bf16_attention` if it has been decided in this process, else None (cheap: no measurement)."""
    return None if _ATTENTION is None else _ATTENTION[0]


def _attention_note() -> str:
    if bf16_attention():
        return "attention in bf16"
    speedup = _ATTENTION[1]
    if speedup is None:
        return "attention in float32"
    return f"attention in float32 (bf16 attention measured {speedup:.2f}x its speed)"


def normalize_flag(flag: str) -> str:
    """Flag names as Linux spells them: ``AVX512BF16`` (macOS) and ``avx512_bf16`` are one flag."""
    flag = flag.strip().lower().replace(".", "_")
    return {"avx512bf16": "avx512_bf16", "amxbf16": "amx_bf16", "feat_bf16": "bf16"}.get(flag, flag)


def parse_cpuinfo(text: str) -> set[str] | None:
    """The flags (x86 ``flags``, ARM ``Features``) of the first processor in ``/proc/cpuinfo`` text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return {normalize_flag(f) for f in value.split()}
    return None


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags, Linux-style (``avx512_bf16``, ``amx_bf16``, ARM ``bf16``); None if unreadable."""
    try:
        if platform.system() == "Linux":
            return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
        if platform.system() == "Darwin":
            return _macos_flags()
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        logger.info("cannot read the CPU flags: %s", e)
    return None


def _sysctl(name: str) -> str:
    done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else ""


def _macos_flags() -> set[str] | None:
    if platform.machine().lower() == "arm64":
        value = _sysctl("hw.optional.arm.FEAT_BF16")
        return ({"bf16"} if value == "1" else set()) if value else None
    words = f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}".split()
    return {normalize_flag(w) for w in words} or None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, ``sysctl``), else what ``platform`` says."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if platform.system() == "Linux":
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip()
        if platform.system() == "Darwin":
            name = _sysctl("machdep.cpu.brand_string")
            if name:
                return name
    return platform.processor() or platform.machine() or "unknown CPU"


# --- the micro-benchmark, cached per machine --------------------------------------------------------------------


def cache_file() -> Path:
    """``$TITOK_CACHE/precision.json``, else ``~/.cache/titok/precision.json``."""
    return Path(os.environ.get("TITOK_CACHE", Path.home() / ".cache" / "titok")) / "precision.json"


def measure_speedup(size: int = 512, repeats: int = 7) -> float:
    """How many times faster a (size x size) @ (size x size) product runs in bf16 than in fp32 on the CPU
    (medians of alternating runs, after a warm-up)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in pairs}
    for rep in range(repeats + 1):
        for dtype, (x, y) in pairs.items():
            start = time.perf_counter()
            torch.mm(x, y)
            if rep:  # the first round warms up
                times[dtype].append(time.perf_counter() - start)
    return statistics.median(times[torch.float32]) / statistics.median(times[torch.bfloat16])


ATTENTION_SHAPES = ((32, 4, 97, 32), (4, 12, 257, 64))  # (B, heads, L, head dim): a Fashion-MNIST and a B-64 encoder


def measure_attention_speedup(shapes=ATTENTION_SHAPES, repeats: int = 7) -> float:
    """How many times faster ``scaled_dot_product_attention``, forward and backward, runs in bf16 than in float32
    on the CPU: the geometric mean over ``shapes`` (B, heads, L, head dim) of the ratios of medians of alternating
    runs, after a warm-up."""
    import torch.nn.functional as F

    ratios = []
    for shape in shapes:
        base = [torch.randn(shape) for _ in range(3)]
        inputs = {dtype: [t.to(dtype).requires_grad_() for t in base] for dtype in (torch.float32, torch.bfloat16)}
        times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in inputs}
        with torch.autocast("cpu", enabled=False):
            for rep in range(repeats + 1):
                for dtype, (q, k, v) in inputs.items():
                    start = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v).sum().backward()
                    if rep:  # the first round warms up
                        times[dtype].append(time.perf_counter() - start)
        ratios.append(statistics.median(times[torch.float32]) / statistics.median(times[torch.bfloat16]))
    return statistics.geometric_mean(ratios)


def cached_speedup() -> float:
    """:func:`measure_speedup`, measured once per CPU model and torch version and kept in :func:`cache_file`."""
    return _cached("bf16_speedup", measure_speedup)


def _cached(name: str, measure) -> float:
    """The measurement ``name`` of this CPU model and torch version: from :func:`cache_file`, else ``measure()``
    (and then kept there)."""
    from titok.io import atomic_write

    key = f"{cpu_name()} | {platform.machine()} | torch {torch.__version__}"
    path = cache_file()
    cache: dict = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(key) if isinstance(cache.get(key), dict) else {}
    if isinstance(entry.get(name), (int, float)) and not isinstance(entry.get(name), bool):
        return float(entry[name])
    value = float(measure())
    logger.info("%s = %.2f on %s (cached in %s)", name, value, key, path)
    cache[key] = {**entry, name: value}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(cache, indent=2) + "\n"))
    except OSError as e:
        logger.warning("cannot cache the measurement %s in %s: %s", name, path, e)
    return value
