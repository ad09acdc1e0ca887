"""Recipe ``generator``: a MaskGIT generator trained on pretokenized codes.

Each step masks a schedule-drawn fraction of every sequence, drops the class of a fraction of the rows
(classifier-free guidance), and minimises label-smoothed cross-entropy on all positions (masked ones weighted 1,
the others ``unmasked_weight``). AdamW, warm-up + cosine LR, clipping, EMA; the EMA weights are exported.

With ``ordering.per=batch`` (for the codes of an ordered tokenizer, and ``model.ordered=true``) each batch keeps only
a prefix of the codes, its length drawn ``uniform`` in ``[min_tokens, N]`` or over powers of two (``pow2``): the
transformer reads the class token and the kept positions only, and the loss covers those, so the generator learns
to sample any prefix (``generate(..., num_tokens=k)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from titok.config import Config
from titok.data.batch import TokenBatch
from titok.data.images import save_grid
from titok.data.tokens import TokenDataset
from titok.losses.masked import masked_token_loss, random_mask
from titok.models import GeneratorConfig, MaskedGenerator, build_model, model_section
from titok.sampling import SamplingConfig
from titok.train import announce
from titok.train.config import OptimConfig, RunConfig
from titok.train.ema import EMA
from titok.train.optim import make_optimizer
from titok.train.ordering import OrderingConfig, draw_lengths
from titok.train.runtime import Runtime, start

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskingConfig(Config):
    schedule: Literal["arccos", "cosine", "linear", "square", "sqrt"] = "arccos"
    label_smoothing: float = 0.1
    unmasked_weight: float = 0.1
    class_dropout: float = 0.1


@dataclass(frozen=True)
class PreviewConfig(Config):
    """Sample grids written every ``train.preview_every`` steps (needs ``tokenizer``)."""

    classes: tuple[int, ...] = ()  # empty: the first (up to) 8 classes
    per_class: int = 4
    sampling: SamplingConfig | None = None  # None: the generator's own defaults


@dataclass(frozen=True)
class GeneratorRecipe(Config):
    recipe: Literal["generator"] = "generator"
    tokens: str = ""
    tokenizer: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-4, betas=(0.9, 0.96), weight_decay=0.03, warmup_steps=10_000)
    )
    train: RunConfig = field(default_factory=RunConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    ordering: OrderingConfig = field(default_factory=OrderingConfig)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("tokens: the folder written by `titok pretokenize` is required")
        _check_ordering(self.ordering, self.model_config())

    def model_config(self) -> GeneratorConfig:
        return model_section(self.model, GeneratorConfig)


def _check_ordering(ordering: OrderingConfig, cfg: GeneratorConfig) -> None:
    if ordering.per == "off":
        return
    if ordering.per != "batch":
        raise ValueError(f"ordering.per={ordering.per}: the generator keeps one prefix length per batch (per=batch)")
    if not cfg.ordered:
        raise ValueError("ordering.per is on: set model.ordered=true (the exported generator then says so)")
    if ordering.min_tokens > cfg.num_tokens:
        raise ValueError(f"ordering.min_tokens {ordering.min_tokens} exceeds the model's {cfg.num_tokens} tokens")


def prefix(codes: torch.Tensor, ordering: OrderingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Codes (B, N) -> the batch's kept prefix (B, k), k drawn by ``ordering`` (all N when it is off)."""
    kept = draw_lengths(ordering, 1, codes.shape[1], generator) if generator is not None else None
    return codes if kept is None else codes[:, : int(kept[0])]


def _step_loss(
    model,
    batch: TokenBatch,
    cfg: GeneratorConfig,
    recipe: GeneratorRecipe,
    generators: dict[str, torch.Generator],
    device,
) -> dict:
    masking, rng = recipe.masking, generators["masking"]
    codes, labels = batch.codes.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True)
    codes = prefix(codes, recipe.ordering, generators.get("ordering"))
    mask = random_mask(codes, masking.schedule, rng)
    drop = (torch.rand(codes.shape[0], generator=rng, device=device) < masking.class_dropout) | (labels < 0)
    cls = torch.where(drop, cfg.drop_label_id, labels + cfg.codebook_size + 1)
    inputs = torch.cat([cls[:, None], codes.masked_fill(mask, cfg.mask_token_id)], dim=1)
    loss, accuracy = masked_token_loss(
        model(inputs), codes, mask, label_smoothing=masking.label_smoothing, unmasked_weight=masking.unmasked_weight
    )
    values = {"loss": loss, "accuracy": accuracy}
    if "ordering" in generators:  # the mean kept length, logged
        values["tokens"] = torch.tensor(float(codes.shape[1]))
    return values


def _generators(recipe: GeneratorRecipe, rt: Runtime) -> dict[str, torch.Generator]:
    """The masking stream (per process) and, with ordering on, the prefix lengths' stream (CPU, per process)."""
    seed = recipe.train.seed
    generators = {"masking": torch.Generator(rt.device).manual_seed(seed + rt.rank)}
    if recipe.ordering.per != "off":
        generators["ordering"] = torch.Generator().manual_seed(seed + 15485863 * (rt.rank + 1))
    return generators


@torch.no_grad()
def _preview(rt: Runtime, generator: MaskedGenerator, tokenizer, recipe: GeneratorRecipe, step: int) -> None:
    cfg = generator.config
    classes = recipe.preview.classes or tuple(range(min(cfg.num_classes, 8)))
    labels = torch.tensor(classes).repeat_interleave(recipe.preview.per_class)
    g = torch.Generator(rt.device).manual_seed(recipe.train.seed)
    codes = generator.eval().generate(labels, sampling=recipe.preview.sampling, generator=g)
    images = tokenizer.detokenize(codes).clamp(0, 1)
    grid = save_grid(images, rt.output_dir / "previews" / f"step-{step:07d}.png", nrow=recipe.preview.per_class)
    rt.metrics.image(step, "samples", grid)


def train(recipe: GeneratorRecipe, resume: bool | str = False) -> Path:
    """Run the recipe; returns the folder of the exported model (``output_dir/final``)."""
    import titok

    rt = start(recipe.train, recipe.to_dict(), resume)
    config = recipe.model_config()
    data = TokenDataset(recipe.tokens)
    data.check(config.codebook_size, config.num_tokens, config.num_classes)
    with torch.random.fork_rng():  # the same initial weights in every process
        torch.manual_seed(recipe.train.seed)
        model = build_model(config).to(rt.device)
    ema = EMA(model, recipe.train.ema_decay) if recipe.train.ema_decay > 0 else None
    optimizer = make_optimizer(model, recipe.optim)
    model, optimizer = rt.prepare(model, optimizer)
    generators = _generators(recipe, rt)
    step = 0
    if state := rt.load(generators):
        rt.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        step = state["step"]
    if final := announce.finished(rt, step):
        return final
    announce.start(rt, model, data, step, recipe.recipe)
    tokenizer = titok.load(recipe.tokenizer, device=rt.device) if recipe.tokenizer and rt.is_main else None
    batches = rt.batches(data)
    run = recipe.train
    bar = tqdm(total=run.max_steps, initial=step, unit="step", desc="generator", disable=not rt.is_main)
    while step < run.max_steps:
        model.train()
        micro = [next(batches) for _ in range(run.grad_accum)]
        values = rt.accumulate(model, micro, lambda b: _step_loss(model, b, config, recipe, generators, rt.device))
        rt.check_finite(step + 1, values)
        values["grad_norm"] = rt.apply_gradients(model, optimizer, recipe.optim, step)
        values["lr"] = optimizer.param_groups[0]["lr"]
        step += 1
        if ema is not None:
            ema.update(rt.unwrap(model))
        if logged := rt.log(step, values, images=run.batch_size * run.grad_accum):
            bar.set_postfix(loss=f"{logged['loss']:.4f}", acc=f"{logged['accuracy']:.3f}")
        bar.update()
        if rt.due(step, run.save_every):
            state = {"model": rt.unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}
            rt.save(step, {**state, "ema": ema.state_dict() if ema else None, "recipe": recipe.to_dict()}, generators)
        if tokenizer is not None and rt.due(step, run.preview_every):
            _preview(rt, ema.model if ema else rt.unwrap(model), tokenizer, recipe, step)
    bar.close()
    final = rt.export(ema.model if ema else model)
    rt.close()
    return final
