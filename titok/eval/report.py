"""The result of an evaluation: every number with the protocol that produced it, as a table and as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from titok.io import atomic_write


@dataclass
class Metric:
    name: str  # e.g. "rFID", "IS", "PSNR"
    value: float | None  # None: not computed (``note`` says why)
    unit: str = ""
    note: str = ""


@dataclass
class EvalReport:
    """``metrics`` in table order; ``protocol`` says how they were made (models, data, preprocessing, extractor
    and its weights' hash, sampling settings, seed, splits); ``warnings`` where the numbers could mislead."""

    command: str  # "recon" or "gen"
    num_images: int
    metrics: list[Metric]
    protocol: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable inputs, one message each

    def value(self, name: str) -> float | None:
        for m in self.metrics:
            if m.name == name:
                return m.value
        raise KeyError(f"no metric {name!r} in this report ({', '.join(m.name for m in self.metrics)})")

    def to_dict(self) -> dict[str, Any]:
        from titok import __version__

        return {"titok_version": __version__, **asdict(self)}

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, default=str, allow_nan=True) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    def table(self) -> str:
        """A plain-text table: one metric per line, then the warnings."""
        lines = [f"{self.command}: {self.num_images:,} images"]
        for m in self.metrics:
            if m.value is None:
                lines.append(f"  {m.name:22s} not computed ({m.note})")
            else:
                shown = f"{m.value:.4f}" if math.isfinite(m.value) else str(m.value)
                lines.append(f"  {m.name:22s} {shown}{' ' + m.unit if m.unit else ''}{'  ' + m.note if m.note else ''}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)
