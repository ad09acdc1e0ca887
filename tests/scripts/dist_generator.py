"""Run the generator recipe (under torchrun) and save every process's final weights as rank{N}.pt beside the run.
With ``TITOK_TEST_NAN_RANK=r``, process r's loss turns NaN at step 15."""

import os
import sys

import torch

from titok.train import generator
from titok.train.config import read_recipe
from titok.train.runtime import Runtime

_export = Runtime.export


def export(self, model, name="final"):
    torch.save(self.unwrap(model).state_dict(), self.output_dir / f"rank{self.rank}.pt")
    return _export(self, model, name)


Runtime.export = export

if os.environ.get("TITOK_TEST_NAN_RANK") == os.environ.get("RANK"):  # this process's loss turns NaN at step 15
    _loss, calls = generator._step_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = _loss(*args, **kwargs)
        return {**out, "loss": out["loss"] * float("nan")} if len(calls) >= 15 else out

    generator._step_loss = poisoned
generator.train(generator.GeneratorRecipe.from_dict(read_recipe(sys.argv[1], sys.argv[2:])))
