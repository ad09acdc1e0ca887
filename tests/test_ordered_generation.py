"""Generation at any length: ``generate(..., num_tokens=k)`` runs the transformer on the class token and k code
positions; the generator recipe's ``ordering`` trains on prefixes with the loss on the kept positions only, and
leaves the full-length path as it was; ``titok generate --tokens K``."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_generator_training import MODEL, losses, recipe_file, rule_tokens  # noqa: F401 (a fixture)
from tiny import TINY_CONFIGS

import titok
from titok.cli import main
from titok.losses.masked import masked_token_loss, random_mask
from titok.models import GeneratorConfig
from titok.train import generator as recipe_module
from titok.train.config import read_recipe
from titok.train.generator import GeneratorRecipe, prefix
from titok.train.ordering import OrderingConfig


def _generator(name: str, **overrides):
    torch.manual_seed(0)
    return titok.models.build_model(TINY_CONFIGS[name].replace(**overrides)).eval()


@pytest.mark.parametrize("name", ["bert", "uvit"])
def test_prefix_sampling_runs_on_k_positions(name):
    model = _generator(name, ordered=True)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    labels = torch.tensor([0, 2, 1])
    codes = model.generate(labels, num_tokens=2, num_sample_steps=3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, 2) and codes.dtype == torch.long and 0 <= int(codes.min()) <= int(codes.max()) < 16
    assert seen and all(shape[1] == 3 for shape in seen)  # the class token + 2 code positions, every step


@pytest.mark.parametrize("name", ["bert", "uvit"])
def test_full_length_sampling_is_unchanged(name):
    model = _generator(name)
    g = torch.Generator().manual_seed(1)
    default = model.generate(torch.tensor([0, 1]), generator=g)
    explicit = model.generate(torch.tensor([0, 1]), num_tokens=4, generator=g.manual_seed(1))
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("name", ["bert", "uvit"])
def test_a_prefix_uses_only_the_first_position_embeddings(name):
    model = _generator(name)
    codes = torch.randint(0, 17, (2, 2))
    before = model.logits(codes, torch.tensor([0, 1]))
    with torch.no_grad():
        model.pos_embed[3:] = 100.0  # positions past the class token + 2 codes
    torch.testing.assert_close(model.logits(codes, torch.tensor([0, 1])), before)
    assert before.shape == (2, 2, 16)


def test_prefix_lengths_are_checked_and_unordered_generators_warn():
    model = _generator("bert")
    with pytest.raises(ValueError, match=r"num_tokens must be an integer in \[1, 4\], got 5"):
        model.generate(num_samples=1, num_tokens=5)
    with pytest.raises(ValueError, match=r"codes must have shape \(B, k\) with 1 <= k <= 4, got \(1, 5\)"):
        model.logits(torch.zeros(1, 5, dtype=torch.long))
    with pytest.warns(UserWarning, match="not trained on prefixes"):
        model.generate(num_samples=1, num_tokens=2, num_sample_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _generator("bert", ordered=True).generate(num_samples=1, num_tokens=2, num_sample_steps=2)
        model.generate(num_samples=1, num_sample_steps=2)
    assert not [w for w in caught if "prefixes" in str(w.message)]


def test_training_prefix_and_its_loss_cover_the_kept_positions_only():
    codes = torch.randint(0, 16, (8, 4))
    assert torch.equal(prefix(codes, OrderingConfig(), None), codes)
    g = torch.Generator().manual_seed(0)
    lengths = {prefix(codes, OrderingConfig(per="batch", lengths="pow2"), g).shape[1] for _ in range(40)}
    assert lengths == {1, 2, 4}
    model = _generator("bert", ordered=True).train()
    cfg = model.config
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    batch = recipe_module.TokenBatch(codes, torch.arange(8) % 3)
    recipe = _recipe(ordering={"per": "batch", "min_tokens": 2})
    generators = {"masking": torch.Generator().manual_seed(5), "ordering": torch.Generator().manual_seed(6)}
    torch.manual_seed(0)  # dropout
    out = recipe_module._step_loss(model, batch, cfg, recipe, generators, "cpu")
    k = seen[0].shape[1] - 1
    assert 2 <= k <= 4 and float(out["tokens"]) == k
    # by definition: the masked-token loss of the kept prefix, with the same draws of mask and class dropout
    rng = torch.Generator().manual_seed(5)
    mask = random_mask(codes[:, :k], recipe.masking.schedule, rng)
    assert torch.equal(seen[0][:, 1:] == cfg.mask_token_id, mask)
    torch.manual_seed(0)
    expected, _ = masked_token_loss(model(seen[0]), codes[:, :k], mask, label_smoothing=0.1, unmasked_weight=0.1)
    torch.testing.assert_close(out["loss"], expected)


def test_a_full_length_draw_equals_training_without_ordering():
    model = _generator("bert", ordered=True).eval()  # no dropout: the two losses must be bit-identical
    batch = recipe_module.TokenBatch(torch.randint(0, 16, (8, 4)), torch.arange(8) % 3)
    off = recipe_module._step_loss(
        model, batch, model.config, _recipe(), {"masking": torch.Generator().manual_seed(3)}, "cpu"
    )
    full = {"masking": torch.Generator().manual_seed(3), "ordering": torch.Generator().manual_seed(9)}
    on = recipe_module._step_loss(
        model, batch, model.config, _recipe(ordering={"per": "batch", "min_tokens": 4}), full, "cpu"
    )
    assert torch.equal(off["loss"], on["loss"]) and "tokens" not in off


def _recipe(**sections) -> GeneratorRecipe:
    model = {**TINY_CONFIGS["bert"].to_dict(), "ordered": True}
    return GeneratorRecipe.from_dict({"tokens": "unused", "model": model, **sections})


@pytest.mark.parametrize(
    ("ordering", "ordered", "message"),
    [
        ({"per": "image"}, True, "the generator keeps one prefix length per batch"),
        ({"per": "batch"}, False, r"set model\.ordered=true"),
        ({"per": "batch", "min_tokens": 5}, True, "ordering.min_tokens 5 exceeds the model's 4 tokens"),
    ],
)
def test_recipes_that_cannot_train_prefixes_say_why(ordering, ordered, message):
    model = {**TINY_CONFIGS["bert"].to_dict(), "ordered": ordered}
    with pytest.raises(ValueError, match=message):
        GeneratorRecipe.from_dict({"tokens": "unused", "model": model, "ordering": ordering})


def test_an_ordered_generator_trains_and_samples_prefixes(rule_tokens, tmp_path):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=40, save_every=40)
    overrides = ["model.ordered=true", "ordering.per=batch", "ordering.lengths=pow2"]
    final = recipe_module.train(GeneratorRecipe.from_dict(read_recipe(path, overrides)))
    model = titok.load(final)
    assert isinstance(model.config, GeneratorConfig) and model.config.ordered
    assert len(losses(tmp_path / "run")) == 40
    assert model.generate(torch.tensor([1, 2]), num_tokens=2, num_sample_steps=2).shape == (2, 2)


def test_generate_cli_tokens(tmp_path, capsys):
    titok.models.build_model(TINY_CONFIGS["titok_pixels_vq"].replace(ordered=True)).save_pretrained(tmp_path / "tok")
    gen = titok.models.build_model(GeneratorConfig(**{**MODEL, "codebook_size": 32, "ordered": True}))
    gen.save_pretrained(tmp_path / "gen")
    args = ["generate", str(tmp_path / "tok"), str(tmp_path / "gen"), "--classes", "1", "--steps", "2"]
    assert main([*args, "--tokens", "2", "--out-dir", str(tmp_path / "pngs")]) == 0
    assert "2 of 4 tokens each" in capsys.readouterr().out and len(list((tmp_path / "pngs").glob("*.png"))) == 4
    for k in ("0", "5"):
        assert main([*args, "--tokens", k, "-o", str(tmp_path / "g.png")]) == 2
        assert (
            f"--tokens {k} is out of range: {tmp_path / 'gen'} models 4 tokens (give 1 to 4)" in capsys.readouterr().err
        )
