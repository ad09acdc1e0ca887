"""Run a tokenizer recipe (under torchrun) and save every process's final weights as rank{N}.pt beside the run."""

import sys

import torch

from titok.train.config import read_recipe
from titok.train.recipes import parse, recipes
from titok.train.runtime import Runtime

_export = Runtime.export


def export(self, model, name="final"):
    torch.save(self.unwrap(model).state_dict(), self.output_dir / f"rank{self.rank}.pt")
    return _export(self, model, name)


Runtime.export = export
recipe = parse(read_recipe(sys.argv[1], sys.argv[2:]), sys.argv[1])
recipes()[recipe.recipe][1](recipe)
