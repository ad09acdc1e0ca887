"""What a training run says when it starts: device, processes, parameters, data, where it resumes from; and that a
finished run is finished (instead of quietly exporting it again).

Messages go to the ``titok.train.announce`` logger (the ``titok train`` command shows them), from the main process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from titok.models.storage import CONFIG_NAME, SAFETENSORS_NAME
from titok.train.runtime import Runtime

logger = logging.getLogger("titok.train.announce")


def _data_size(data: Any) -> str:
    try:
        return f"{len(data):,} items"
    except TypeError:  # webdataset shards: a stream without a length
        return "a stream (webdataset shards)"


def start(rt: Runtime, model: nn.Module, data: Any, step: int, name: str) -> None:
    """Log the run's set-up once training begins (main process only)."""
    if not rt.is_main:
        return
    module = rt.unwrap(model)
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    where = f"resuming from {rt.resume_from} (step {step:,})" if rt.resume_from else "starting from step 0"
    logger.info(
        "training %s: %s, %d process(es) on %s; %s parameters (%s trainable); data: %s; %s; %s steps, output %s",
        name,
        type(module).__name__,
        rt.world,
        rt.device,
        f"{total:,}",
        f"{trainable:,}",
        _data_size(data),
        where,
        f"{rt.run.max_steps:,}",
        rt.output_dir,
    )


def finished(rt: Runtime, step: int) -> Path | None:
    """The exported model if the run is complete (``step`` reached ``train.max_steps`` and ``output_dir/final`` was
    written): the caller returns it without training or exporting again. None otherwise."""
    final = rt.output_dir / "final"
    if step < rt.run.max_steps or not ((final / CONFIG_NAME).is_file() and (final / SAFETENSORS_NAME).is_file()):
        return None
    if rt.is_main:
        logger.info(
            "the run in %s is finished (step %s of %s): nothing to train; its model is %s (raise train.max_steps "
            "to train on)",
            rt.output_dir,
            f"{step:,}",
            f"{rt.run.max_steps:,}",
            final,
        )
    rt.close()
    return final
