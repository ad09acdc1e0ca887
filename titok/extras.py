"""The distribution's name and its optional extras, for messages that say what to install.

The import name and the command are ``titok``; the distribution is ``titok-tokenizer`` (``titok`` on PyPI is an
unrelated project). This module imports nothing: every layer may use it.
"""

from __future__ import annotations

DISTRIBUTION = "titok-tokenizer"
EXTRAS = ("train", "eval", "webdataset", "wandb", "demo", "dev")


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra`` (one of :data:`EXTRAS`), e.g. ``pip install 'titok-tokenizer[eval]'``."""
    if extra not in EXTRAS:
        raise ValueError(f"no extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    return f"pip install '{DISTRIBUTION}[{extra}]'"
