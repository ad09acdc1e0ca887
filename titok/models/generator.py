"""MaskGIT generators: bidirectional transformers over a tokenizer's N codes, conditioned on a class.

Token ids (K = codebook size, M = number of classes): ``0..K-1`` image codes, ``K`` the mask token, ``K+1+c`` class
``c``, ``K+M+1`` "no class" (unconditional). The input is ``[class token, N code tokens]``; the output is logits over
the K real codes at the N code positions. Any prefix of the sequence works the same way (``[class, k codes]`` with the
first k + 1 position embeddings), so a generator samples the first k codes of an ordered tokenizer with
``generate(..., num_tokens=k)``; one trained on prefixes (``ordered``) does it well.

- :class:`BertGenerator`: BERT (post-norm, learned positions; TiTok L-32 and B-64).
- :class:`UViTGenerator`: U-ViT (pre-norm, ``depth // 2`` in-blocks, a mid block and ``depth // 2`` out-blocks with
  long skips; TiTok S-128).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from titok.config import Config
from titok.layers import Block, BlockStack, PostNormBlock, run_block
from titok.models.base import TitokModel, architecture, check_prefix_length
from titok.quantizers import check_codes
from titok.sampling import SamplingConfig, StepCallback, maskgit_decode


@dataclass(frozen=True)
class GeneratorConfig(Config):
    arch: Literal["bert", "uvit"] = "bert"
    codebook_size: int = 4096
    num_tokens: int = 32
    num_classes: int = 1000
    hidden_size: int = 768
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 3072
    dropout: float = 0.1
    attn_dropout: float = 0.1
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    ordered: bool = False  # trained on prefixes of the codes (recipe ``ordering``): samples any k <= N codes

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def drop_label_id(self) -> int:
        return self.codebook_size + self.num_classes + 1

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + self.num_classes + 2


class MaskedGenerator(TitokModel):
    """Shared input handling; subclasses map ``input_ids`` (B, N+1) to logits (B, N, K) in ``forward``."""

    config_class = GeneratorConfig
    config: GeneratorConfig
    arch: ClassVar[str]  # the GeneratorConfig.arch that builds this class

    @classmethod
    def accepts(cls, config: Config) -> bool:
        return isinstance(config, GeneratorConfig) and config.arch == getattr(cls, "arch", None)

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    def check_labels(self, labels: torch.Tensor | Sequence[int], batch_size: int | None = None) -> torch.Tensor:
        """Class ids -> (B,) int64 on this model's device; ``ValueError`` unless they are integers in
        ``[0, num_classes)`` (and ``batch_size`` of them, if given)."""
        labels = torch.as_tensor(labels, device=self.device)
        if batch_size is None and labels.ndim == 1:
            batch_size = labels.shape[0]
        if labels.ndim != 1 or labels.shape[0] != batch_size or labels.dtype.is_floating_point:
            n = "B" if batch_size is None else batch_size
            raise ValueError(f"labels must be {n} integer class ids, got shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise ValueError(
                f"class id {bad} is out of range: this generator knows classes [0, {self.config.num_classes})"
            )
        return labels.long()

    def condition_tokens(
        self, labels: torch.Tensor | None, batch_size: int, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class ids (B,) (None: unconditional) -> condition token ids (B,); ``drop`` (B,) bool marks samples
        whose class is replaced by the "no class" token (classifier-free guidance training)."""
        cfg = self.config
        if labels is None:
            return torch.full((batch_size,), cfg.drop_label_id, dtype=torch.long, device=self.device)
        tokens = self.check_labels(labels, batch_size) + cfg.codebook_size + 1
        if drop is not None:
            tokens = torch.where(drop.to(self.device), torch.full_like(tokens, cfg.drop_label_id), tokens)
        return tokens

    def logits(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Codes (B, k) int64, k <= N (all N codes or a prefix), with masked positions set to ``mask_token_id``,
        and class ids (B,) or None (unconditional) -> logits (B, k, K) over the codebook."""
        check_codes(codes, self.codebook_size + 1)
        if not 1 <= codes.shape[1] <= self.num_tokens:
            raise ValueError(f"codes must have shape (B, k) with 1 <= k <= {self.num_tokens}, got {tuple(codes.shape)}")
        codes = codes.to(self.device)
        cond = self.condition_tokens(labels, codes.shape[0], drop)
        return self(torch.cat([cond[:, None], codes.long()], dim=1))

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | Sequence[int] | None = None,
        *,
        num_samples: int | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        num_tokens: int | None = None,
        on_step: StepCallback | None = None,
        **overrides: Any,
    ) -> torch.Tensor:
        """Sample codes (B, N) int64 for class ids ``labels`` (B,), or ``num_samples`` unconditional ones; with
        ``num_tokens`` only the first k codes (B, k): the transformer reads the class token and k code positions.

        ``sampling`` (default: ``config.sampling``, the released settings for the released generators) with
        ``overrides`` of its fields under the reference's keyword names (``num_sample_steps``, ``guidance_scale``,
        ``guidance_decay``, ``guidance_scale_pow``, ``randomize_temperature``, ``softmax_temperature_annealing``,
        ``mask_schedule``; None keeps the setting). ``on_step(step, codes, sampled)`` is called after each step
        with the partly decoded codes (:data:`titok.sampling.StepCallback`); it does not change the result. Call it
        in eval mode.
        """
        settings = _settings(sampling or self.config.sampling, overrides)
        length = self.num_tokens if num_tokens is None else self.check_prefix(num_tokens)
        batch = _batch_size(labels, num_samples)
        cond = self.condition_tokens(labels, batch)  # validated once, outside the loop

        def tokens_to_logits(codes: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            cls = cond.repeat(codes.shape[0] // batch)
            cls = torch.where(drop, torch.full_like(cls, self.config.drop_label_id), cls)
            return self(torch.cat([cls[:, None], codes], dim=1))

        return maskgit_decode(
            tokens_to_logits,
            batch_size=batch,
            num_tokens=length,
            mask_token_id=self.mask_token_id,
            conditional=labels is not None,
            settings=settings,
            device=self.device,
            generator=generator,
            on_step=on_step,
        )

    def check_prefix(self, k: int) -> int:
        """``k`` if 1 <= k <= N (a ValueError otherwise); warns when this generator was not trained on prefixes."""
        untrained = (
            "this generator was not trained on prefixes (ordered=false): its samples of {k} of {n} codes may be poor"
        )
        return check_prefix_length(k, self.num_tokens, self.config.ordered, untrained)


SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingConfig))


def _settings(base: SamplingConfig, overrides: dict[str, Any]) -> SamplingConfig:
    unknown = sorted(set(overrides) - SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"generate() got an unexpected keyword argument {unknown[0]!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**given) if given else base


def _batch_size(labels: torch.Tensor | Sequence[int] | None, num_samples: int | None) -> int:
    if labels is None:
        if num_samples is None or num_samples < 1:
            raise ValueError(f"unconditional sampling needs num_samples >= 1, got {num_samples}")
        return num_samples
    if num_samples is not None and num_samples != len(labels):
        raise ValueError(f"num_samples={num_samples} disagrees with the {len(labels)} labels given")
    return len(labels)


@architecture
class BertGenerator(MaskedGenerator):
    """MaskGIT's BERT: token + position (+ BERT's token-type 0) embeddings, LayerNorm, post-norm blocks, a
    linear head at the code positions."""

    arch = "bert"

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.token_embed = nn.Embedding(config.vocab_size, h)
        self.pos_embed = nn.Parameter(torch.zeros(config.num_tokens + 1, h))
        self.type_embed = nn.Parameter(torch.zeros(2, h))  # BERT's token-type table; every token has type 0
        self.embed_norm = nn.LayerNorm(h, eps=1e-12)
        self.embed_drop = nn.Dropout(config.dropout)
        self.blocks = BlockStack(
            PostNormBlock(h, config.num_heads, config.mlp_dim, dropout=config.dropout, attn_dropout=config.attn_dropout)
            for _ in range(config.depth)
        )
        self.lm_head = nn.Linear(h, config.codebook_size)
        self.apply(_init_bert)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.type_embed, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N+1) -> logits (B, N, K)."""
        x = self.token_embed(input_ids) + self.pos_embed[: input_ids.shape[1]] + self.type_embed[0]
        x = self.embed_drop(self.embed_norm(x))
        return self.lm_head(self.blocks(x)[:, 1:])


class UViTSkipBlock(Block):
    """A U-ViT out-block: ``skip_linear`` merges the long skip into the stream, then a pre-norm block."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__(dim, num_heads, mlp_dim, qkv_bias=False)
        self.skip_linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(self.skip_linear(torch.cat([x, skip], dim=-1)))


@architecture
class UViTGenerator(MaskedGenerator):
    """U-ViT: ``depth // 2`` in-blocks, a mid block, ``depth // 2`` out-blocks (out-block i takes in-block
    ``-1-i``'s output as its skip), LayerNorm, a linear head at the code positions. Dropout is not used."""

    arch = "uvit"

    grad_checkpointing: bool = False

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        d, h, m = config.hidden_size, config.num_heads, config.mlp_dim
        half = config.depth // 2
        self.token_embed = nn.Embedding(config.vocab_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(config.num_tokens + 1, d))
        self.in_blocks = nn.ModuleList(Block(d, h, m, qkv_bias=False) for _ in range(half))
        self.mid_block = Block(d, h, m, qkv_bias=False)
        self.out_blocks = nn.ModuleList(UViTSkipBlock(d, h, m) for _ in range(half))
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.codebook_size)
        self.apply(_init_uvit)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N+1) -> logits (B, N, K)."""
        x = self.token_embed(input_ids) + self.pos_embed[: input_ids.shape[1]]
        ckpt = self.grad_checkpointing
        skips = []
        for block in self.in_blocks:
            x = run_block(block, x, checkpointing=ckpt)
            skips.append(x)
        x = run_block(self.mid_block, x, checkpointing=ckpt)
        for block in self.out_blocks:
            x = run_block(block, x, skips.pop(), checkpointing=ckpt)
        return self.lm_head(self.norm(x)[:, 1:])


def _init_weights(m: nn.Module, init_normal) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        init_normal(m.weight, std=0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_bert(m: nn.Module) -> None:
    """BERT's: normal(0.02) weights."""
    _init_weights(m, nn.init.normal_)


def _init_uvit(m: nn.Module) -> None:
    """U-ViT's: truncated-normal(0.02) weights."""
    _init_weights(m, nn.init.trunc_normal_)
