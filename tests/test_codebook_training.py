"""FSQ tokens and the codebook remedies (k-means initialisation, the reference's clustering revival, dead-code
restart): their definitions, and that runs using them resume exactly, stay identical across processes and score
held-out data at every checkpoint."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from test_generator_training import kill_and_resume, launch
from test_tokenizer_training import NO_PERCEPTUAL, TITOK, _cli, metrics, recipe_file
from tiny import build

import titok
from titok.quantizers import FiniteScalarQuantizer, VectorQuantizer
from titok.train.codebook import CodebookConfig, CodebookMaintenance, kmeans

# ------------------------------------------------------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3), (4, 4, 4), (7, 6)])
def test_fsq_codes_embed_and_requantize_to_themselves(levels):
    q = FiniteScalarQuantizer(levels)
    grid = q.codebook()  # every code's grid point, in code order
    assert grid.shape == (q.codebook_size, len(levels)) and grid.abs().max() <= 1
    # a latent inside each grid point's bin: tanh(z) * L / 2 = the level's value, (L - 1) / 2 * grid
    lv = torch.tensor(levels, dtype=torch.float32)
    z = torch.atanh(grid * (lv - 1) / lv)
    out = q(z[None])
    assert torch.equal(out.codes[0], torch.arange(q.codebook_size))
    torch.testing.assert_close(out.quantized[0], grid)
    z = torch.randn(3, 50, len(levels)) * 3
    out = q(z)
    assert out.codes.dtype == torch.int64 and out.codes.min() >= 0 and out.codes.max() < q.codebook_size
    torch.testing.assert_close(q.embed(out.codes), out.quantized)


def test_fsq_reaches_every_level_and_passes_gradients_straight_through():
    q = FiniteScalarQuantizer((2, 5))
    z = torch.linspace(-3, 3, 2000)[:, None].expand(-1, 2).contiguous().requires_grad_(True)
    out = q(z[None])
    assert sorted(set(out.quantized[0, :, 0].tolist())) == [-1.0, 1.0]  # L=2: two levels, split at z = 0
    assert (out.quantized[0, :, 0] > 0).tolist() == (z[:, 0] > 0).tolist()
    assert sorted(set(out.quantized[0, :, 1].tolist())) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    out.quantized.sum().backward()
    assert (z.grad > 0).all()  # through tanh and the straight-through rounding
    assert not list(q.parameters()) and float(out.loss) == 0.0


def test_fsq_config_must_agree_with_its_levels():
    with pytest.raises(ValueError, match=r"set token_dim=3 and codebook_size=24"):
        titok.TiTokConfig(quantizer="fsq", fsq_levels=(4, 3, 2))
    with pytest.raises(ValueError, match="needs fsq_levels"):
        titok.TiTokConfig(quantizer="fsq", token_dim=3, codebook_size=24)
    with pytest.raises(ValueError, match=r"fsq_levels .* are for quantizer 'fsq'"):
        titok.TiTokConfig(fsq_levels=(4, 3, 2))
    with pytest.raises(ValueError, match="integers >= 2"):
        FiniteScalarQuantizer((4, 1))


def test_fsq_tokenizer_round_trips_through_save_and_load(tmp_path):
    model = build("titok_fsq")
    images = torch.rand(2, 3, 32, 32)
    codes = model.tokenize(images)
    assert codes.shape == (2, 4) and codes.max() < 24
    model.save_pretrained(tmp_path)
    loaded = titok.load(tmp_path)
    assert torch.equal(loaded.tokenize(images), codes)
    assert torch.equal(loaded.detokenize(codes), model.detokenize(codes))


# --------------------------------------------------------------------------------------------------- remedies


def _clusters(generator: torch.Generator, k: int = 4, per: int = 50, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.eye(dim)[:k] * 10 if k <= dim else torch.randn(k, dim, generator=generator) * 10
    points = centres.repeat_interleave(per, 0) + 0.1 * torch.randn(k * per, dim, generator=generator)
    return centres, points


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres, points = _clusters(g, k=3)
    found = kmeans(points, 3, 10, g)
    nearest = torch.cdist(centres, found).min(-1).values
    assert (nearest < 0.5).all(), found
    spherical = kmeans(points, 3, 5, g, spherical=True)
    torch.testing.assert_close(spherical.norm(dim=-1), torch.ones(3))


def _maintenance(k: int = 8, dim: int = 3, l2: bool = False, **options) -> CodebookMaintenance:
    q = VectorQuantizer(k, dim, l2_norm=l2)
    return CodebookMaintenance(CodebookConfig(**options), q, seed=0, device=torch.device("cpu"))


def _observe(m: CodebookMaintenance, features: torch.Tensor) -> torch.Tensor:
    out = m.quantizer(features[None])
    m.observe(out)
    return out.codes[0]


def test_kmeans_init_replaces_the_codebook_once():
    m = _maintenance(k=3, kmeans_init=True)
    centres, points = _clusters(torch.Generator().manual_seed(1), k=3)
    _observe(m, points)
    assert m.step(lambda t: t) == {"codebook_kmeans_init": 150.0}
    assert (torch.cdist(centres, m.quantizer.embedding.weight).min(-1).values < 0.5).all()
    after = m.quantizer.embedding.weight.clone()
    _observe(m, points)
    m.step(lambda t: t)
    assert torch.equal(m.quantizer.embedding.weight, after)  # once only


def test_clustering_moves_unused_codes_onto_their_nearest_feature_and_keeps_used_ones():
    m = _maintenance(k=8, clustering=True)
    weight = m.quantizer.embedding.weight
    features = torch.randn(64, 3)
    with torch.no_grad():
        weight[0] = features[:32].mean(0)  # the only code anyone uses
    m.usage[0] = 1.0  # its running usage is already high
    before = weight.clone()
    codes = _observe(m, features)
    m.step(lambda t: t)
    assert torch.equal(weight[0], before[0]) or codes.unique().tolist() != [0]
    for k in range(1, 8):
        if (codes == k).any():
            continue
        nearest = features[torch.cdist(before[k : k + 1], features).argmin()]
        alpha = torch.exp(torch.tensor(-(float(m.usage[k]) * 8 * 10) / (1 - 0.99) - 1e-3))
        torch.testing.assert_close(weight[k], before[k] * (1 - alpha) + nearest * alpha)
    assert 0.0 < float(m.usage.sum()) <= 1.0 + 1e-9


def test_clustering_searches_the_sphere_for_l2_codebooks():
    m = _maintenance(k=4, l2=True, clustering=True)
    features = torch.rand(32, 3) * 5 + 0.1  # raw, unnormalised encoder outputs, all in the positive orthant
    weight = m.quantizer.embedding.weight
    with torch.no_grad():
        weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]))
    assert _observe(m, features).unique().tolist() == [0]
    m.step(lambda t: t)
    assert torch.equal(weight[0], torch.ones(3))  # in use: stays
    for k, axis in zip((1, 2, 3), range(3)):  # unused: onto the raw feature nearest in angle
        nearest = features[torch.nn.functional.normalize(features, dim=-1)[:, axis].argmin()]
        torch.testing.assert_close(weight[k], nearest, atol=1e-2, rtol=0)


def test_dead_codes_restart_from_batch_features_after_the_window():
    m = _maintenance(k=6, restart_after=2)
    weight = m.quantizer.embedding.weight
    features = torch.randn(40, 3)
    with torch.no_grad():
        weight.copy_(torch.cat([features[:1], torch.full((5, 3), 100.0)]))  # codes 1-5 are never nearest
    _observe(m, features)
    assert m.step(lambda t: t)["codebook_restarted"] == 0
    _observe(m, features)
    assert m.step(lambda t: t)["codebook_restarted"] == 5
    assert torch.equal(weight[0], features[0])
    assert all(torch.isclose(features, w).all(-1).any() for w in weight[1:])


def test_maintenance_state_round_trips():
    a = _maintenance(k=6, restart_after=1, clustering=True)
    features = torch.randn(40, 3)
    _observe(a, features)
    a.step(lambda t: t)
    b = _maintenance(k=6, restart_after=1, clustering=True)
    b.quantizer.load_state_dict(a.quantizer.state_dict())
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        _observe(m, features + 1)
        m.step(lambda t: t)
    assert torch.equal(a.quantizer.embedding.weight, b.quantizer.embedding.weight)


def test_remedies_need_a_learned_codebook(tmp_path):
    fsq = {**TITOK, "quantizer": "fsq", "fsq_levels": [4, 4, 2], "token_dim": 3, "codebook_size": 32}
    path = recipe_file(
        tmp_path / "f.yaml", "single_stage", model=fsq, losses=NO_PERCEPTUAL, codebook={"clustering": True}
    )
    with pytest.raises(ValueError, match=r"need a learned .vq. codebook; this model has FiniteScalarQuantizer"):
        from titok.train.config import read_recipe
        from titok.train.recipes import parse, recipes

        recipe = parse(read_recipe(str(path), []), str(path))
        recipes()[recipe.recipe][1](recipe)


# ------------------------------------------------------------------------------------------------- training runs

REMEDIES = {"clustering": True, "kmeans_init": True, "restart_after": 2}


def test_a_run_with_every_remedy_and_ordered_tokens_resumes_exactly_and_scores_held_out_data(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sections = dict(
        model={**TITOK, "l2_norm": True, "ordered": True, "tail": "learned"},  # ordered tokens: their draws resume too
        losses=NO_PERCEPTUAL,
        codebook=REMEDIES,
        ordering={"per": "image", "lengths": "pow2"},
        heldout={"source": "fashion-mnist:test", "num": 20, "extractor": "fmnist", "batch_size": 8},
        train={"max_steps": 12, "save_every": 4, "batch_size": 4, "preview_every": 0},
    )
    straight = recipe_file(tmp_path / "a.yaml", "single_stage", **sections)
    subprocess.run(_cli("train", "tokenizer", str(straight)), check=True, capture_output=True, env=env)
    killed = recipe_file(tmp_path / "b.yaml", "single_stage", **sections)
    resumed = kill_and_resume(_cli("train", "tokenizer", str(killed)), tmp_path / "b_run", 8, env)
    assert resumed.returncode == 0, resumed.stderr
    drop = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}  # noqa: E731
    a, b = metrics(tmp_path / "a_run"), metrics(tmp_path / "b_run")
    assert [drop(r) for r in a] == [drop(r) for r in b]
    assert a[0]["codebook_kmeans_init"] == 4 * 4  # the first batch's 4 images x 4 tokens
    assert any(r.get("codebook_restarted", 0) > 0 for r in a)
    held = [r for r in a if "heldout_usage" in r]
    assert [r["step"] for r in held] == [4, 8, 12]
    assert {"heldout_psnr", "heldout_ssim", "heldout_rFD-fmnist", "heldout_perplexity", "heldout_dead"} <= set(held[0])
    assert all(0 < r["heldout_usage"] <= 1 and 1 <= r["heldout_perplexity"] <= 32 for r in held)
    assert (tmp_path / "a_run" / "previews" / "heldout.png").is_file()


def test_two_processes_apply_the_same_codebook_updates(tmp_path):
    path = recipe_file(
        tmp_path / "d.yaml",
        "single_stage",
        model=TITOK,
        losses=NO_PERCEPTUAL,
        codebook=REMEDIES,
        train={"max_steps": 4, "batch_size": 4},
    )
    out = launch([str(Path(__file__).parent / "scripts" / "dist_tokenizer.py"), str(path)])
    assert out.returncode == 0, out.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "d_run" / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert metrics(tmp_path / "d_run")[0]["codebook_kmeans_init"] == 2 * 4 * 4  # both processes' features


# ------------------------------------------------------------------------------------ classifier perceptual term


def test_classifier_feature_loss_is_zero_on_equal_images_and_pulls_towards_the_target():
    from titok.losses.features import ClassifierFeatureLoss
    from titok.metrics.fmnist import WEIGHTS

    loss = ClassifierFeatureLoss(WEIGHTS)
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(4, 3, 32, 32, generator=g)
    assert float(loss(targets, targets)) == pytest.approx(0.0, abs=1e-6)
    images = torch.rand(4, 3, 32, 32, generator=g).requires_grad_(True)
    value = loss(images, targets)
    assert value.ndim == 0 and float(value.detach()) > 0.01
    value.backward()
    with torch.no_grad():
        stepped = images - 0.05 * images.grad / images.grad.abs().max()
    assert float(loss(stepped, targets)) < float(value.detach())
    assert not any(p.requires_grad for p in loss.parameters())


def test_classifier_feature_loss_names_what_is_missing(tmp_path):
    from titok.losses.perceptual import build_perceptual

    with pytest.raises(ValueError, match=r"needs losses\.fmnist_feature_network"):
        build_perceptual(0.0, 0.0, fmnist_feature_weight=1.0)
    with pytest.raises(FileNotFoundError, match=r"python -m titok.metrics.fmnist --seed 1 -o .*nope.safetensors"):
        build_perceptual(0.0, 0.0, fmnist_feature_weight=1.0, fmnist_feature_network=str(tmp_path / "nope.safetensors"))


def test_the_shipped_perceptual_classifier_is_not_the_fd_network():
    from titok.losses.features import SHIPPED, ClassifierFeatureLoss
    from titok.metrics.fmnist import WEIGHTS, load_classifier

    loss = ClassifierFeatureLoss("shipped")  # the name recipes use
    mine = dict(loss.classifier.named_parameters())
    theirs = dict(load_classifier(WEIGHTS).named_parameters())
    assert SHIPPED.is_file() and mine.keys() == theirs.keys()
    assert all(not torch.equal(mine[k], theirs[k]) for k in mine)  # another seed: other weights everywhere
    images, g = torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(1)
    assert float(loss(images, torch.rand(2, 3, 32, 32, generator=g))) > 0
