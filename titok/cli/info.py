"""``titok info``: a model's architecture, parameter counts, tokens and codebook."""

from __future__ import annotations

import argparse
import json
import math

from titok.cli.common import add_model_argument, load_model, torch


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="architecture, parameters, tokens per image, codebook",
        description="Describe MODEL: its class, parameter counts, image and patch size, tokens per image, encoder "
        "and decoder, codebook and bits per image. A preset name without weights describes the architecture only.",
    )
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(run=run_info)


def describe(model) -> dict:
    """A summary of a model's architecture, as printed by ``titok info``."""
    from titok.models import MaskedGenerator, TiTok

    cfg = model.config
    info: dict = {"class": type(model).__name__, "parameters": model.num_parameters()}
    if isinstance(model, TiTok):
        info.update(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            tokens_per_image=cfg.num_tokens,
            encoder=f"ViT width {cfg.encoder.width}, {cfg.encoder.depth} layers, {cfg.encoder.num_heads} heads",
            decoder=f"ViT width {cfg.decoder.width}, {cfg.decoder.depth} layers, {cfg.decoder.num_heads} heads",
            head=cfg.head,
            ordered=f"yes: any prefix of the tokens decodes (tail {cfg.tail})" if cfg.ordered else "no",
            encoder_parameters=sum(p.numel() for p in model.encoder.parameters()),
            decoder_parameters=sum(p.numel() for p in model.decoder.parameters())
            + sum(p.numel() for p in model.head.parameters()),
        )
        if cfg.quantizer == "vq":
            info["codebook"] = f"{cfg.codebook_size} x {cfg.token_dim}" + (", l2-normalised" if cfg.l2_norm else "")
            info["bits_per_image"] = cfg.num_tokens * math.log2(cfg.codebook_size)
        elif cfg.quantizer == "fsq":
            levels = " x ".join(map(str, cfg.fsq_levels))
            info["codebook"] = f"FSQ, {levels} levels = {cfg.codebook_size} codes of {cfg.token_dim} channels"
            info["bits_per_image"] = cfg.num_tokens * math.log2(cfg.codebook_size)
        else:
            info["latent"] = f"continuous (VAE), {cfg.token_dim} channels per token"
    elif isinstance(model, MaskedGenerator):
        info.update(
            arch=cfg.arch,
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            tokens=cfg.num_tokens,
            codebook_size=cfg.codebook_size,
            num_classes=cfg.num_classes,
            ordered="yes: trained on prefixes of the codes" if cfg.ordered else "no",
            sampling=cfg.sampling.to_dict(),
        )
    else:
        info.update(
            image_size=cfg.image_size,
            tokens_per_image=cfg.num_tokens,
            codebook=f"{cfg.codebook_size} x {cfg.z_channels}",
            downsampling=cfg.downsample_factor,
        )
    return info


def run_info(args: argparse.Namespace) -> int:
    from titok.models import PRESETS, build_model
    from titok.skeleton import skeleton

    if args.weights is None and args.model in PRESETS:
        with skeleton():  # the architecture alone: nothing to download
            model = build_model(PRESETS[args.model].config)
        note = f"preset {args.model}: {PRESETS[args.model].description} (architecture only, no weights loaded)"
    else:
        model = load_model(args.model, args.weights, torch.device("cpu"))
        note = str(args.model)
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(note)
    for key, value in info.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        print(f"  {key.replace('_', ' '):20s} {value}")
    return 0
