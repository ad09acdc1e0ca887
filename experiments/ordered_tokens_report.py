"""The Markdown report of ``experiments/ordered_tokens.py``: tables, plots and findings, from its results JSON alone."""

from __future__ import annotations

import itertools
import math
import shlex
from pathlib import Path

NAMES = {"ordered": "ordered", "fixed": "fixed", "jpeg": "JPEG", "webp": "WebP"}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(r) + " |" for r in rows), ""]


def _plot(path: Path, panels: list[tuple[str, str, list[tuple[str, list, list]]]], log_x: int | None) -> None:
    """One row of panels (title, x label, [(label, xs, ys)]); x on a log scale of base ``log_x`` (None: linear)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, xlabel, series) in zip(axes[0], panels):
        for label, xs, ys in series:
            ax.plot(xs, ys, "o-", markersize=4, label=label)
        if log_x:
            ax.set_xscale("log", base=log_x)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_k(curve: list[dict]) -> dict[int, dict]:
    return {p["k"]: p for p in curve}


def _provenance(results: dict, report_command: str) -> list[str]:
    s = results["settings"]
    return [
        f"Every number below comes from `{results['command']}` (the first {s['images']:,} images of the Fashion-MNIST "
        f"test split, seed {s['seed']}; {results['seconds']:,} s), and this page from `{report_command}`.",
        "",
    ]


def tokens_section(results: dict, figures: Path) -> list[str]:
    toks = results["tokenizers"]
    out = ["## Quality against the number of tokens", ""]
    for name, t in toks.items():
        kind = f"ordered, tail `{t['tail']}`" if t["ordered"] else "trained without tail drops"
        bits = math.log2(t["codebook_size"])
        out.append(
            f"- {name}: `{t['path']}`, {t['num_tokens']} tokens of {t['codebook_size']} codes ({bits:g} bits), {kind}"
        )
    out += [
        "",
        "Each tokenizer decodes the first k of its codes (PSNR in dB, higher is better; rFD-fmnist, lower).",
        "",
    ]
    ordered, fixed = _by_k(toks["ordered"]["curve"]), _by_k(toks["fixed"]["curve"])
    header = ["k", "bytes", "ordered PSNR", "ordered rFD-fmnist", "fixed PSNR", "fixed rFD-fmnist"]
    rows = []
    for k in sorted(set(ordered) | set(fixed)):
        o, f = ordered.get(k, {}), fixed.get(k, {})
        rows.append([str(k), _fmt((o or f)["bytes"], 1), _fmt(o.get("psnr")), _fmt(o.get("rfd"), 3),
                     _fmt(f.get("psnr")), _fmt(f.get("rfd"), 3)])  # fmt: skip
    out += _table(header, rows)
    series = {key: [(n, [p["k"] for p in t["curve"]], [p[key] for p in t["curve"]]) for n, t in toks.items()]
              for key in ("psnr", "rfd")}  # fmt: skip
    _plot(figures / "tokens.png", [("PSNR (dB)", "tokens k", series["psnr"]),
                                   ("rFD-fmnist (lower is better)", "tokens k", series["rfd"])], 2)  # fmt: skip
    out += [f"![PSNR and rFD-fmnist against k]({figures.name}/tokens.png)", ""]
    return out + _token_findings(ordered, fixed, toks)


def _token_findings(ordered: dict[int, dict], fixed: dict[int, dict], toks: dict) -> list[str]:
    ks = sorted(ordered)
    drops = [f"{a} -> {b}" for a, b in itertools.pairwise(ks) if ordered[b]["psnr"] < ordered[a]["psnr"]]
    text = "**Findings.** The ordered tokenizer's PSNR " + (
        "rises with every longer prefix measured."
        if not drops
        else f"does not rise monotonically: it falls at {', '.join(drops)}."
    )
    n_o, n_f = toks["ordered"]["num_tokens"], toks["fixed"]["num_tokens"]
    if n_o == n_f and n_o in fixed:
        cost = fixed[n_o]["psnr"] - ordered[n_o]["psnr"]
        verdict = "within" if abs(cost) <= 0.5 else "not within"
        text += (
            f" At k = N = {n_o} the ordered tokenizer reaches {_fmt(ordered[n_o]['psnr'])} dB against "
            f"{_fmt(fixed[n_o]['psnr'])} dB for the fixed one ({verdict} 0.5 dB; rFD-fmnist "
            f"{_fmt(ordered[n_o]['rfd'], 3)} against {_fmt(fixed[n_o]['rfd'], 3)})."
        )
    short = [k for k in ks if k < n_f and k in fixed]
    if short:
        better = [k for k in short if ordered[k]["psnr"] > fixed[k]["psnr"]]
        text += f" Below N the ordered tokenizer has the higher PSNR at {len(better)} of {len(short)} lengths."
    return [text, ""]


def codecs_section(results: dict, figures: Path) -> list[str]:
    toks, codecs, matched = results["tokenizers"], results["codecs"], results["matched"]
    out = ["## Against bytes: JPEG and WebP", ""]
    out += [
        "k codes cost k x log2(codebook size) / 8 bytes per image (the codes' bits, no entropy coding). JPEG and "
        "WebP (Pillow; each image a file of its own, grey images as 8-bit grey, headers counted) are swept over "
        "their quality settings; for each token budget the table takes the setting whose mean file size is nearest "
        "(its mean bytes per image are given: compare them with the budget). A budget below a codec's smallest "
        "file is marked *(smallest)*.",
        "",
    ]
    ordered = _by_k(toks["ordered"]["curve"])
    header = ["k", "token bytes", "ordered PSNR", "ordered rFD"]
    for codec in matched:
        header += [f"{NAMES[codec]} quality", f"{NAMES[codec]} bytes", f"{NAMES[codec]} PSNR", f"{NAMES[codec]} rFD"]
    rows = []
    for i, k in enumerate(sorted(ordered)):
        row = [str(k), _fmt(ordered[k]["bytes"], 1), _fmt(ordered[k]["psnr"]), _fmt(ordered[k]["rfd"], 3)]
        for points in matched.values():
            m = points[i]
            quality = str(m["quality"]) + ("" if m["reachable"] else " *(smallest)*")
            row += [quality, _fmt(m["bytes"], 1), _fmt(m["psnr"]), _fmt(m["rfd"], 3)]
        rows.append(row)
    out += _table(header, rows)
    panels = []
    for key, title in (("psnr", "PSNR (dB)"), ("rfd", "rFD-fmnist (lower is better)")):
        series = [
            (f"{n} tokens", [p["bytes"] for p in t["curve"]], [p[key] for p in t["curve"]]) for n, t in toks.items()
        ]
        series += [(NAMES[c], [p["bytes"] for p in curve], [p[key] for p in curve]) for c, curve in codecs.items()]
        panels.append((title, "bytes per image", series))
    _plot(figures / "bytes.png", panels, 10)
    out += [f"![PSNR and rFD-fmnist against bytes per image]({figures.name}/bytes.png)", ""]
    sweep = [f"{NAMES[c]} {_fmt(curve[0]['bytes'], 0)} to {_fmt(curve[-1]['bytes'], 0)} bytes (quality "
             f"{curve[0]['quality']} to {curve[-1]['quality']})" for c, curve in codecs.items()]  # fmt: skip
    return [*out, f"The sweeps span {'; '.join(sweep)}.", ""]


def generation_section(results: dict, figures: Path) -> list[str]:
    gen = results["generation"]
    if not gen:
        return []
    samples = results["settings"]["gen_samples"]
    out = ["## Generation at any length", ""]
    out += [
        f"gFD-fmnist (against the whole test split's statistics, lower is better) of {samples:,} samples per length "
        "(classes in turn, the generator's own sampling settings, seed 0), sampled as the first k codes "
        "(`generate(..., num_tokens=k)`) and decoded from them.",
        "",
    ]
    for name, g in gen.items():
        out.append(f"- {name}: `{g['path']}`")
    out.append("")
    ks = sorted({p["k"] for g in gen.values() for p in g["points"]})
    rows = [[str(k)] + [_fmt(_by_k(g["points"]).get(k, {}).get("gfd"), 3) for g in gen.values()] for k in ks]
    out += _table(["k", *(f"{name} gFD-fmnist" for name in gen)], rows)
    series = [(name, [p["k"] for p in g["points"]], [p["gfd"] for p in g["points"]]) for name, g in gen.items()]
    _plot(figures / "generation.png", [("gFD-fmnist (lower is better)", "tokens k", series)], 2)
    return [*out, f"![gFD-fmnist against k]({figures.name}/generation.png)", ""]


def adaptive_section(results: dict) -> list[str]:
    out = ["## Adaptive length", ""]
    out += [
        "`tokenize(images, quality={'psnr': T})` with the ordered tokenizer: per image the fewest codes (of 1..N) "
        "whose reconstruction reaches T dB; an image that no length brings to T keeps all N.",
        "",
    ]
    some = results["settings"].get("adaptive_images")
    if some is not None:
        out += [f"Measured on the first {some:,} of the scored test images.", ""]
    rows = [[_fmt(a["psnr"], 1), _fmt(a["mean_k"]), _fmt(a["bytes"], 1), _fmt(100 * a["met"], 1)]
            for a in results["adaptive"]]  # fmt: skip
    return out + _table(["PSNR target (dB)", "mean tokens", "mean bytes", "% of images that reach it"], rows)


def tails_section(results: dict, figures: Path) -> list[str]:
    """Ordered tokenizers that differ in their tail (learned token or cut), at each k: table, plot, verdict."""
    tails = results.get("tails") or {}
    if len(tails) < 2:
        return []
    out = ["## Learned tail against cut tail", ""]
    for name, t in tails.items():
        trained = t.get("trained") or {}
        how = ", ".join(f"{k}={v}" for k, v in (trained.get("ordering") or {}).items())
        steps = f", {trained['steps']:,} steps" if trained.get("steps") else ""
        out.append(f"- {name}: `{t['path']}`, tail `{t['tail']}`{steps}" + (f" ({how})" if how else ""))
    out += ["", "Both decode the first k of their codes; the same images and scores as above.", ""]
    curves = {name: _by_k(t["curve"]) for name, t in tails.items()}
    ks = sorted(set.intersection(*(set(c) for c in curves.values())))
    header = ["k", *(f"{n} PSNR" for n in tails), *(f"{n} rFD-fmnist" for n in tails)]
    rows = [[str(k), *(_fmt(curves[n][k]["psnr"]) for n in tails), *(_fmt(curves[n][k]["rfd"], 3) for n in tails)]
            for k in ks]  # fmt: skip
    out += _table(header, rows)
    series = {key: [(n, ks, [curves[n][k][key] for k in ks]) for n in tails] for key in ("psnr", "rfd")}
    _plot(figures / "tails.png", [("PSNR (dB)", "tokens k", series["psnr"]),
                                  ("rFD-fmnist (lower is better)", "tokens k", series["rfd"])], 2)  # fmt: skip
    out += [f"![learned tail against cut tail]({figures.name}/tails.png)", ""]
    mean = {n: sum(curves[n][k]["psnr"] for k in ks) / len(ks) for n in tails}
    leads = {n: [k for k in ks if curves[n][k]["psnr"] >= max(curves[m][k]["psnr"] for m in tails)] for n in tails}
    text = "**Finding.** Averaged over k, the PSNR is " + ", ".join(f"{n} {_fmt(mean[n])} dB" for n in tails) + ". "
    winners = [n for n in tails if len(leads[n]) == len(ks)]
    if winners:
        text += f"`{winners[0]}` has the higher PSNR at every length."
    else:
        text += (
            "Neither is better at every length: "
            + "; ".join(f"`{n}` leads at k = {', '.join(map(str, leads[n]))}" for n in tails if leads[n])
            + (
                ". Only a learned tail can keep a different length per image (`ordering.per=image`), which the shipped "
                "ordered recipe uses."
            )
        )
    return out + [text, ""]


def training_section(steps: list[tuple[str, Path, list[str]]], runs: Path) -> list[str]:
    """How the compared models are trained: the command, and the titok commands it runs (``plan()``)."""
    out = ["## How the models were trained", ""]
    out += [
        f"`python experiments/ordered_tokens.py train --runs {runs}` runs these in turn (each skipped when finished, "
        "resumed when cut short; `--tokenizer DIR` gives the generator an existing ordered tokenizer's codes instead "
        "of training one):",
        "",
        "```",
        *(f"titok {shlex.join(cli)}" for _, _, cli in steps),
        "```",
        "",
        "The first trains the shipped ordered tokenizer's recipe; the fixed tokenizer is the shipped one "
        "(`titok train tokenizer single_stage_vq_fmnist_perceptual`), its generator `titok train generator fmnist`.",
        "",
    ]
    return out


def write_report(
    results: dict, doc: Path, report_command: str, steps: list[tuple[str, Path, list[str]]] | None = None
) -> Path:
    """Write the report ``doc`` and its plots (in the folder ``doc`` without its suffix); returns ``doc``. With
    ``steps`` (``plan()``), the report ends with the commands that train the models it compares."""
    figures = doc.with_suffix("")
    lines = ["# Ordered tokens on Fashion-MNIST", ""]
    lines += [
        "A tokenizer trained with tail drops (`model.ordered=true`, recipe section `ordering`) decodes any prefix of "
        "its codes: the first codes carry the coarse picture. This page measures what a prefix is worth against the "
        "same prefix of a tokenizer trained without them, against JPEG and WebP at the same bytes, for generation, "
        "and for the adaptive length that `tokenize(..., quality=...)` picks.",
        "",
    ]
    lines += _provenance(results, report_command)
    lines += tokens_section(results, figures)
    lines += tails_section(results, figures)
    lines += codecs_section(results, figures)
    lines += generation_section(results, figures)
    lines += adaptive_section(results)
    if steps:
        lines += training_section(steps, steps[0][1].parent)
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(doc)
    return doc
