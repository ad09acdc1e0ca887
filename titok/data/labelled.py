"""Labelled PNG grids at a readable scale: what ``titok demo``, ``reconstruct`` and ``generate`` write for people
to look at (small images are enlarged with nearest-neighbour, so that pixels stay pixels)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from titok.data.images import round_to_uint8, save_png

READABLE = 128  # pixels: images smaller than this are enlarged by default


def readable_scale(size: int, scale: int | None = None) -> int:
    """``scale`` if given (at least 1), else the whole factor that makes a ``size``-pixel image at least
    ``READABLE`` pixels wide (1 for images already that large)."""
    if scale is not None:
        if scale < 1:
            raise ValueError(f"the scale must be a whole number of at least 1, got {scale}")
        return scale
    return max(1, math.ceil(READABLE / size))


Row = tuple[str, torch.Tensor] | tuple[str, torch.Tensor, list[str]]


def write_grid(out: str | Path, rows: list[Row], columns: list[str], scale: int = 3, pad: int = 2) -> Path:
    """A labelled PNG grid: ``rows`` of (name, images (C, 3, S, S) in [0, 1]), one column per image, or (name,
    images, captions): a row whose images are captioned one by one (drawn above them). ``columns`` names the
    columns on top (empty: no header). Row names go on the left (all empty: no margin). Images are enlarged
    ``scale`` times (nearest neighbour)."""
    from PIL import Image, ImageDraw

    side = rows[0][1].shape[-1] * scale
    cell = side + 2 * pad
    width = max(len(row[0]) for row in rows)
    left = 6 * width + 12 if width else 0
    tops = [22 if any(columns) else 0]  # each row's top edge; a captioned row has a caption band above it
    for row in rows:
        tops.append(tops[-1] + (CAPTION if len(row) > 2 else 0) + cell)
    count = max(len(row[1]) for row in rows)
    canvas = Image.new("RGB", (left + cell * count, tops[-1]), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((left + c * cell + pad, 6), name, fill="black")
    for top, (name, batch, *captions) in zip(tops, rows):
        if captions:
            for c, caption in enumerate(captions[0]):
                draw.text((left + c * cell + pad, top + 2), caption, fill="black")
            top += CAPTION
        draw.text((4, top + cell // 2 - 6), name, fill="black")
        for c, tile in enumerate(round_to_uint8(batch).permute(0, 2, 3, 1).numpy()):
            tile = Image.fromarray(tile).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (left + c * cell + pad, top + pad))
    save_png(np.asarray(canvas), out)
    return Path(out)


CAPTION = 14  # pixels above a captioned row
