"""Run the generator recipe (under torchrun) and save every process's final weights as rank{N}.pt beside the run."""

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
generator.train(generator.GeneratorRecipe.from_dict(read_recipe(sys.argv[1], sys.argv[2:])))
