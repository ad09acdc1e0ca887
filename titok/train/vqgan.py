"""Recipe ``vqgan``: train a 2-D VQGAN of the MaskGIT-VQGAN architecture (any size) on your images.

It gives the two-stage recipe a teacher for any data without the released MaskGIT-VQGAN weights: ``vqgan`` ->
``stage1`` (its codes as proxy targets) -> ``stage2`` (its codebook and decoder as the pixel decoder). Choose a
downsampling factor (``2 ** (len(channel_mult) - 1)``) equal to the tokenizer's patch size and a codebook of the
tokenizer's ``proxy_codebook_size``.

Loss: L2 (or L1) + perceptual + ``quantizer_weight`` x the VQ loss + the hinge GAN with LeCam (see
:mod:`titok.train.objectives`; the VQ loss follows the VQ-VAE convention, beta on the commitment term). The reference
trained no VQGAN (it ported Google's MaskGIT tokenizer), so the defaults are its single-stage tokenizer recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from titok.models import VQGANConfig, build_model, model_section
from titok.train.gan import resume_architecture
from titok.train.loop import seeded
from titok.train.runtime import start
from titok.train.tokenizer import PixelRecipe, fit_pixels


@dataclass(frozen=True)
class VQGANRecipe(PixelRecipe):
    recipe: Literal["vqgan"] = "vqgan"

    def model_config(self) -> VQGANConfig:
        return model_section(self.model, VQGANConfig)


def train(recipe: VQGANRecipe, resume: bool | str = False) -> Path:
    """Run the ``vqgan`` recipe; returns the exported VQGAN's folder (``output_dir/final``)."""
    config = recipe.model_config()
    rt = start(recipe.train, recipe.to_dict(), resume, architecture=resume_architecture)
    return fit_pixels(rt, recipe, seeded(lambda: build_model(config), recipe.train.seed, rt.device))
