"""What a run folder holds besides checkpoints and metrics: the recipe and its history, and no leftovers.

``recipe.json`` is the recipe the run started with; it is never rewritten by a resume. A resume compares its recipe
with the checkpoint's (the recipe in force when the checkpoint was written; ``recipe.json`` and its history for a
checkpoint without one) before anything is written: a change of the architecture (the ``model`` section, the
recipe name, anything else that shapes the saved tensors) is an error that names every such key with both values;
any other change (learning rate, seed, steps...) is allowed, logged, and appended to ``recipe-history.jsonl``, one
JSON object per resume that changed something: the checkpoint, its step, the changes ``{key: [before, after]}``
and the whole recipe in force from then on.

Leftovers: a process killed inside an atomic write leaves a hidden temporary file (``.NAME.XXXX.tmp``) or folder
(``.checkpoint-STEP.tmp``) behind; :func:`remove_leftovers` deletes those of a run folder when the run starts or
resumes, and :meth:`~titok.train.runtime.Runtime.export` those of the export folder before it writes.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from titok.io import atomic_write, read_jsonl

logger = logging.getLogger(__name__)

RECIPE = "recipe.json"
HISTORY = "recipe-history.jsonl"
_LEFTOVER = re.compile(r"^\..+\.tmp$")  # titok.io.atomic_write's and CheckpointManager.save's temporary names

# The keys no resume may change in any recipe: what builds the model and how the checkpoint reads.
ARCHITECTURE = ("recipe", "model")
Architecture = Sequence[str] | Callable[[Mapping[str, Any]], Iterable[str]]


def flatten(recipe: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


_MISSING = object()


def recipe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every key whose value differs, ``{key: (before, after)}``; an absent key reads as the ``_MISSING`` marker."""
    old, new = flatten(before), flatten(after)
    keys = sorted(set(old) | set(new))
    return {
        k: (old.get(k, _MISSING), new.get(k, _MISSING)) for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)
    }


def _show(value: Any) -> str:
    return "absent" if value is _MISSING else json.dumps(value)


def _fixed(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def check_resume(
    checkpoint: Path, stored: Mapping[str, Any], recipe: Mapping[str, Any], architecture: Architecture = ARCHITECTURE
) -> dict[str, tuple[Any, Any]]:
    """The changes from the ``stored`` recipe (the checkpoint's) to ``recipe``; raises ``ValueError`` naming every
    changed key of the architecture (``architecture``: key prefixes, or a function of the stored recipe giving
    them) with its value in the checkpoint and now."""
    changes = recipe_changes(stored, recipe)
    prefixes = list(architecture(stored) if callable(architecture) else architecture)
    fixed = [f"{k} is {_show(a)} there, {_show(b)} now" for k, (a, b) in changes.items() if _fixed(k, prefixes)]
    if fixed:
        raise ValueError(
            f"--resume from {checkpoint}: the recipe changes the architecture the checkpoint was trained with: "
            f"{'; '.join(fixed)}. Resume with the checkpoint's values, or start a new run in another "
            "train.output_dir"
        )
    return changes


def stored_recipe(directory: Path, state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recipe in force when the checkpoint ``state`` was written: its own, else the run folder's latest
    (``recipe.json`` updated by the history), else None."""
    if isinstance(state.get("recipe"), Mapping):
        return dict(state["recipe"])
    history = read_history(directory)
    if history:
        return history[-1]["recipe"]
    path = directory / RECIPE
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def read_history(directory: Path) -> list[dict[str, Any]]:
    """The entries of ``recipe-history.jsonl`` (a torn or damaged line is dropped with a warning naming it)."""
    path = directory / HISTORY
    if not path.is_file():
        return []

    def valid(entry: Any) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("recipe"), dict)

    return [entry for _, entry in read_jsonl(path, valid, "not a history entry", "is damaged (%s): ignored")]


def record_start(directory: Path, recipe: Mapping[str, Any]) -> None:
    """A new run: ``recipe.json`` is ``recipe``, and there is no history yet."""
    atomic_write(directory / RECIPE, lambda p: Path(p).write_text(json.dumps(dict(recipe), indent=2) + "\n"))
    (directory / HISTORY).unlink(missing_ok=True)


def record_resume(
    directory: Path,
    checkpoint: Path,
    step: int,
    stored: Mapping[str, Any] | None,
    recipe: Mapping[str, Any],
    changes: Mapping[str, tuple[Any, Any]],
) -> None:
    """A resume: keep ``recipe.json`` (write the checkpoint's recipe there if the folder has none) and append the
    changes, if any, to the history."""
    if not (directory / RECIPE).is_file():
        record_start(directory, stored if stored is not None else recipe)
    if not changes:
        return
    shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())
    logger.warning("resuming %s with a changed recipe: %s (recorded in %s)", checkpoint, shown, directory / HISTORY)
    plain = {k: [None if v is _MISSING else v for v in pair] for k, pair in changes.items()}
    entry = {"checkpoint": str(checkpoint), "step": step, "changes": plain, "recipe": dict(recipe)}
    path = directory / HISTORY
    kept = "".join(json.dumps(e) + "\n" for e in read_history(directory))
    atomic_write(path, lambda p: Path(p).write_text(kept + json.dumps(entry) + "\n"))


def remove_leftovers(directory: Path, subfolders: Sequence[str] = ("checkpoints", "final", "previews")) -> list[Path]:
    """Delete the temporary files and folders interrupted atomic writes left in ``directory`` and in the
    ``subfolders`` a run writes; returns them."""
    found: list[Path] = []
    for folder in (directory, *(directory / name for name in subfolders)):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if _LEFTOVER.match(p.name)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logger.warning("removed %s, left by an interrupted write", path)
    return found
