"""The shipped training recipes (YAML), installed with the package: ``titok train tokenizer NAME`` finds
``tokenizer/NAME.yaml`` here, ``titok train --list`` lists them. Reading this module imports no torch."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent
KINDS = ("tokenizer", "generator")
# recipe keys that name the output of an earlier run
INPUT_KEYS = ("teacher", "init", "tokenizer", "tokens", "teacher_codes")


def recipe_files(kind: str | None = None) -> dict[str, Path]:
    """``{name: path}`` of the shipped recipes of ``kind`` (both kinds when None), sorted by name."""
    kinds = KINDS if kind is None else (kind,)
    found = {p.stem: p for k in kinds for p in (RECIPES_DIR / k).glob("*.yaml")}
    return dict(sorted(found.items()))


def summary(path: Path) -> str:
    """A recipe's one-line description: the first sentence of its leading comment."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith(("Run:", "First:", "Then:")):
            break
        lines.append(text)
    text = " ".join(lines)
    end = text.find(": ")
    return (text[:end] if 0 < end < 100 else text).rstrip(".")


def resolve(spec: str, kind: str) -> Path:
    """The recipe file ``spec`` names: an existing file, or the bare name (with or without ``.yaml``) of a shipped
    recipe of ``kind``. Raises ``FileNotFoundError`` naming the close matches."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = recipe_files(kind)
    name = path.name.removesuffix(".yaml")
    if os.sep not in spec and name in shipped:
        return shipped[name]
    if path.parts[:2] == ("configs", kind) and len(path.parts) == 3 and name in shipped:
        return shipped[name]  # the source checkout's configs/KIND/NAME.yaml, from any folder
    close = difflib.get_close_matches(name, list(shipped), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"no recipe file at {spec} and no shipped {kind} recipe named {name!r}{hint} (titok train --list shows them)"
    )


def producer(path: str) -> tuple[str, str] | None:
    """``(kind, name)`` of the shipped recipe whose run leaves ``path`` (its ``train.output_dir`` + ``/final``), or
    None."""
    import yaml

    target = os.path.normpath(path)
    for kind in KINDS:
        for name, file in recipe_files(kind).items():
            text = file.read_text(encoding="utf-8")
            output = ((yaml.safe_load(text) or {}).get("train") or {}).get("output_dir")
            if output and os.path.normpath(os.path.join(output, "final")) == target:
                return kind, name
    return None


def missing_inputs(raw: dict, recipe: Path) -> list[str]:
    """For each earlier run's output that the recipe ``raw`` (read from the file ``recipe``) names and that is not
    there, a sentence saying which shipped recipe (or command) makes it; empty when all are there or none is
    known."""
    first = [line.partition("First:")[2].strip() for line in recipe.read_text(encoding="utf-8").splitlines()]
    first = [command for command in first if command]
    problems = []
    for key in INPUT_KEYS:
        value = raw.get(key)
        if not isinstance(value, str) or not value or os.path.exists(value):
            continue
        made_by = producer(value)
        if made_by is not None:
            kind, name = made_by
            problems.append(f"{key}: {value} does not exist yet; it is made by `titok train {kind} {name}`")
        elif key in ("tokens", "teacher_codes"):
            command = next((c for c in first if value in c), f"titok pretokenize TOKENIZER DATA -o {value}")
            problems.append(f"{key}: {value} does not exist yet; make it with `{command}`")
    return problems
