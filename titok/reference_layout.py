"""The reference implementation's (bytedance/1d-tokenizer) checkpoint layouts, converted to titok's.

This is the only module that knows the reference's key names and config format. Its configs are nested
(``model.vq_model``, ``model.generator``, ``dataset.preprocessing``) with ``${...}`` interpolations, and keys
that are absent take the reference's defaults: ``quantize_mode`` "vq", ``finetune_decoder`` true and
``is_legacy`` true (the released L-32 config has neither flag, and its weights include the pixel decoder).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from titok.config import Config
from titok.models import GeneratorConfig, TiTokConfig, ViTConfig, VQGANConfig
from titok.models.presets import MASKGIT_VQGAN
from titok.models.tokenizer_config import VIT_SIZES
from titok.sampling import SamplingConfig

# Keys that old checkpoints may carry and that hold no weights.
IGNORED_KEYS = {"model.embeddings.position_ids"}


def resolve(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``${a.b.c}`` interpolations against the config's root (as OmegaConf does for the reference)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(dict(raw)), resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ValueError(f"cannot resolve the reference config: {e}") from None


def is_reference_config(raw: Mapping[str, Any]) -> bool:
    return isinstance(raw.get("model"), Mapping) and bool({"vq_model", "generator"} & set(raw["model"]))


def _get(section: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in section:
        return section[key]
    if default is ...:
        raise ValueError(f"reference config: {where}.{key} is missing")
    return default


def titok_config(cfg: Mapping[str, Any]) -> TiTokConfig:
    """A resolved reference tokenizer config -> :class:`TiTokConfig`."""
    vq = _get(cfg.get("model", {}), "vq_model", "model")
    where = "model.vq_model"
    mode = vq.get("quantize_mode", "vq")
    finetune, legacy = vq.get("finetune_decoder", True), vq.get("is_legacy", True)
    if mode not in ("vq", "vae"):
        raise ValueError(f"reference config: {where}.quantize_mode {mode!r} is not 'vq' or 'vae'")
    if mode == "vae" and finetune:
        raise ValueError(
            "reference config: finetune_decoder is true with quantize_mode 'vae' (the reference rejects it)"
        )
    if finetune and not legacy:
        raise ValueError("reference config: finetune_decoder needs the legacy (is_legacy) decoder head")
    enc_patch, dec_patch = _get(vq, "vit_enc_patch_size", where), _get(vq, "vit_dec_patch_size", where)
    if enc_patch != dec_patch:
        raise ValueError(f"reference config: encoder patch {enc_patch} != decoder patch {dec_patch} is not supported")
    size = _get(_get(_get(cfg, "dataset", "config"), "preprocessing", "dataset"), "crop_size", "dataset.preprocessing")
    return TiTokConfig(
        image_size=size,
        patch_size=enc_patch,
        num_tokens=_get(vq, "num_latent_tokens", where),
        encoder=_vit(_get(vq, "vit_enc_model_size", where)),
        decoder=_vit(_get(vq, "vit_dec_model_size", where)),
        quantizer=mode,
        token_dim=_get(vq, "token_size", where),
        codebook_size=_get(vq, "codebook_size", where) if mode == "vq" else TiTokConfig.codebook_size,
        l2_norm=bool(_get(vq, "use_l2_norm", where)) if mode == "vq" else False,
        commitment_cost=float(vq.get("commitment_cost", 0.25)),
        head="vqgan" if finetune else ("proxy" if legacy else "pixels"),
        proxy_codebook_size=MASKGIT_VQGAN.codebook_size,
        pixel_decoder=MASKGIT_VQGAN.replace(image_size=size) if finetune else None,
        legacy_token_order=bool(legacy),
    )


def _vit(size: str) -> ViTConfig:
    if size not in VIT_SIZES:
        raise ValueError(f"reference config: ViT size {size!r} is not one of {sorted(VIT_SIZES)}")
    return VIT_SIZES[size]


def generator_config(cfg: Mapping[str, Any]) -> GeneratorConfig:
    """A resolved reference generator config -> :class:`GeneratorConfig` (sampling defaults included)."""
    model = cfg.get("model", {})
    gen, where = _get(model, "generator", "model"), "model.generator"
    arch = {"ViT": "bert", "UViT": "uvit"}.get(gen.get("model_type", "ViT"))
    if arch is None:
        raise ValueError(f"reference config: {where}.model_type {gen['model_type']!r} is not 'ViT' or 'UViT'")
    sampling = SamplingConfig()
    if "guidance_scale" in gen:  # released configs: the settings of the reference's ImageNet sampling script
        sampling = SamplingConfig(
            num_sample_steps=int(gen.get("num_steps", 8)),
            guidance_scale=float(gen["guidance_scale"]),
            guidance_decay=gen.get("guidance_decay", "constant"),
            guidance_scale_pow=3.0,
            randomize_temperature=float(gen.get("randomize_temperature", 1.0)),
            softmax_temperature_annealing=True,
        )
    return GeneratorConfig(
        arch=arch,  # type: ignore[arg-type]
        codebook_size=_get(_get(model, "vq_model", "model"), "codebook_size", "model.vq_model"),
        num_tokens=_get(gen, "image_seq_len", where),
        num_classes=_get(gen, "condition_num_classes", where),
        hidden_size=_get(gen, "hidden_size", where),
        depth=_get(gen, "num_hidden_layers", where),
        num_heads=_get(gen, "num_attention_heads", where),
        mlp_dim=_get(gen, "intermediate_size", where),
        dropout=float(gen.get("dropout", 0.1)),
        attn_dropout=float(gen.get("attn_drop", 0.1)),
        sampling=sampling,
    )


def detect(keys: set[str]) -> str | None:
    """Which reference model a state_dict holds: 'titok', 'maskgit_vqgan', 'bert', 'uvit', or None."""
    if "latent_tokens" in keys:
        return "titok"
    if "model.embeddings.word_embeddings.weight" in keys:
        return "bert"
    if "mid_block.norm1.weight" in keys and "embeddings.weight" in keys:
        return "uvit"
    if {"encoder.conv_in.weight", "decoder.conv_in.weight", "quantize.embedding.weight"} <= keys:
        return "maskgit_vqgan"
    return None


# (pattern, replacement) pairs applied in order; the first match renames a key.
_BLOCK = [
    (r"\.transformer\.(\d+)\.ln_1\.", r".blocks.\1.norm1."),
    (r"\.transformer\.(\d+)\.ln_2\.", r".blocks.\1.norm2."),
    (r"\.transformer\.(\d+)\.attn\.in_proj_(weight|bias)$", r".blocks.\1.attn.qkv.\2"),
    (r"\.transformer\.(\d+)\.attn\.out_proj\.", r".blocks.\1.attn.proj."),
    (r"\.transformer\.(\d+)\.mlp\.c_fc\.", r".blocks.\1.mlp.fc1."),
    (r"\.transformer\.(\d+)\.mlp\.c_proj\.", r".blocks.\1.mlp.fc2."),
]
_TITOK = _BLOCK + [
    (r"^latent_tokens$", "encoder.latent_tokens"),
    (r"^(encoder|decoder)\.class_embedding$", r"\1.class_token"),
    (r"^(encoder|decoder)\.positional_embedding$", r"\1.pos_embed"),
    (r"^(encoder|decoder)\.latent_token_positional_embedding$", r"\1.latent_pos_embed"),
    (r"^(encoder|decoder)\.ln_pre\.", r"\1.norm_pre."),
    (r"^(encoder|decoder)\.ln_post\.", r"\1.norm_post."),
    (r"^encoder\.conv_out\.", "encoder.proj."),
    (r"^decoder\.decoder_embed\.", "decoder.embed."),
    (r"^quantize\.", "quantizer."),
    (r"^pixel_quantize\.embedding\.", "head.codebook."),
    (r"^pixel_decoder\.", "head.pixel_decoder."),
]
_HEADS = {
    "proxy": [(r"^decoder\.ffn\.0\.", "head.fc1."), (r"^decoder\.ffn\.2\.", "head.fc2.")],
    "vqgan": [(r"^decoder\.ffn\.0\.", "head.proxy.fc1."), (r"^decoder\.ffn\.2\.", "head.proxy.fc2.")],
    "pixels": [(r"^decoder\.ffn\.0\.", "head.proj."), (r"^decoder\.conv_out\.", "head.conv.")],
}
_VQGAN = [(r"^quantize\.", "quantizer.")]
_UVIT = [(r"^embeddings\.", "token_embed.")]
_BERT = [
    (r"^model\.embeddings\.word_embeddings\.", "token_embed."),
    (r"^model\.embeddings\.position_embeddings\.weight$", "pos_embed"),
    (r"^model\.embeddings\.token_type_embeddings\.weight$", "type_embed"),
    (r"^model\.embeddings\.LayerNorm\.", "embed_norm."),
    (r"^model\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^model\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"blocks.\1.norm1."),
    (r"^model\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^model\.encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^model\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"blocks.\1.norm2."),
    (r"^model\.lm_head\.", "lm_head."),
]
_BERT_QKV = re.compile(r"^model\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return key


def convert_state_dict(
    state: Mapping[str, torch.Tensor], config: Config
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reference state_dict -> titok state_dict for a model of ``config``.

    Returns the converted tensors and, for error messages, each new key's reference name. Tensors keep their
    values; 1x1 convolutions become linear weights and singleton axes are dropped where titok's shapes lack them
    (that reshaping happens in :func:`titok.models.storage.match_state_dict`).
    """
    if isinstance(config, TiTokConfig):
        rules = _HEADS[config.head] + _TITOK
    elif isinstance(config, VQGANConfig):
        rules = _VQGAN
    elif isinstance(config, GeneratorConfig):
        rules = _BERT if config.arch == "bert" else _UVIT
    else:
        raise TypeError(f"no reference layout for {type(config).__name__}")
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in IGNORED_KEYS:
            continue
        m = _BERT_QKV.match(key) if isinstance(config, GeneratorConfig) else None
        if m:  # BERT's separate query/key/value projections become one fused [q; k; v] projection
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        new = _rename(key, rules)
        out[new], origin[new] = value, key
    for (layer, kind), parts in qkv.items():
        new = f"blocks.{layer}.attn.qkv.{kind}"
        missing = {"query", "key", "value"} - set(parts)
        if missing:
            raise ValueError(f"reference weights: layer {layer} lacks attention.self.{sorted(missing)[0]}.{kind}")
        out[new] = torch.cat([parts["query"], parts["key"], parts["value"]])
        origin[new] = f"model.encoder.layer.{layer}.attention.self.{{query,key,value}}.{kind}"
    return out, origin


def config_for(raw: Mapping[str, Any], kind: str) -> Config:
    """The titok config of a reference config.json whose weights hold a ``kind`` model (see :func:`detect`)."""
    cfg = resolve(raw)
    if kind == "titok":
        return titok_config(cfg)
    if kind in ("bert", "uvit"):
        config = generator_config(cfg)
        if config.arch != kind:
            raise ValueError(
                f"reference config says model_type {cfg['model']['generator'].get('model_type')!r}, "
                f"but the weights hold a {'BERT' if kind == 'bert' else 'U-ViT'} generator"
            )
        return config
    if kind == "maskgit_vqgan":
        return MASKGIT_VQGAN
    raise ValueError(f"no reference model kind {kind!r}")
