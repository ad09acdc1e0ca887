"""What the training datasets return, by name. A dataset returns one item of these types (an image (3, S, S), an int
label, ...); the ``DataLoader`` collates items into a batch of the same type, each field with a leading batch axis."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LabeledBatch(NamedTuple):
    """``images`` (B, 3, S, S) in [0, 1]; ``labels`` (B,) class ids (-1: none); ``skipped`` (B,) unreadable files
    passed over before each item."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: torch.Tensor


class CodedBatch(NamedTuple):
    """A :class:`LabeledBatch` with ``teacher_codes`` (B, G) int64: a 2-D VQGAN's cached codes of the same images."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: torch.Tensor
    teacher_codes: torch.Tensor

    def without_codes(self) -> LabeledBatch:
        return LabeledBatch(self.images, self.labels, self.skipped)


class StreamBatch(NamedTuple):
    """A :class:`LabeledBatch` from a stream, with ``cursors`` (B, 4) int64: (reader, epoch, shard position, samples
    consumed) after each item, so that a resumed run continues where this one stopped."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: torch.Tensor
    cursors: torch.Tensor

    def without_cursors(self) -> LabeledBatch:
        return LabeledBatch(self.images, self.labels, self.skipped)


class TokenBatch(NamedTuple):
    """``codes`` (B, N) int64 of a tokenizer; ``labels`` (B,) class ids (-1: none)."""

    codes: torch.Tensor
    labels: torch.Tensor


TrainBatch = LabeledBatch | CodedBatch
