"""Small typed configs: frozen dataclasses that load strictly from plain dicts (JSON, YAML).

A config is the constructor's argument of a model (or a training recipe). Loading rejects unknown keys and values of
the wrong type with an error that names the key, so a typo in a file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

C = TypeVar("C", bound="Config")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the choices closest to a mistyped ``word`` (empty if none is close)."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.7)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every config: ``from_dict`` / ``to_dict`` / ``replace``."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str | None = None) -> C:
        """Build the config from ``data``, rejecting unknown keys and wrongly typed values.

        ``where`` names the config in error messages (e.g. ``"config.json: config"``).
        """
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            hint = "".join(did_you_mean(k, fields) for k in unknown[:3])
            raise ValueError(f"{where}: unknown key(s) {unknown}{hint}; expected some of {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**values)
        except TypeError as e:  # a required field is missing
            raise ValueError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied; values are type-checked like ``from_dict``."""
        merged = {**self.to_dict(), **changes}
        for key, value in changes.items():
            if isinstance(value, Config):
                merged[key] = value.to_dict()
        return type(self).from_dict(merged)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples and dicts to nested configs."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ValueError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin is tuple:
        return _coerce_tuple(tp, value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        return value if isinstance(value, tp) else tp.from_dict(value, where=where)
    return _coerce_scalar(tp, value, where)


def _coerce_union(tp: Any, value: Any, where: str) -> Any:
    options = typing.get_args(tp)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{where}: must not be null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(option, value, where)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")


def _coerce_tuple(tp: Any, value: Any, where: str) -> tuple:
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{where}: unsupported config annotation {tp!r}")
