"""The Fashion-MNIST report's figures (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

from fmnist_runs import SCHEDULES, STEPS, TOKENS


def plot_tokens(recon: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    tokens = [recon[f"tokens{n}"] for n in TOKENS if f"tokens{n}" in recon]
    for ax, key, label in zip(axes, ["rfd", "psnr", "ssim"], ["rFD-fmnist (lower is better)", "PSNR (dB)", "SSIM"]):
        ax.plot([r["num_tokens"] for r in tokens], [r[key] for r in tokens], "o-", label="S (128 wide, 2+2 blocks)")
        for size, marker in [("XS", "v"), ("M", "^")]:
            r = recon.get(f"size{size}_tokens16")
            if r:
                ax.plot(
                    [16], [r[key]], marker, markersize=9, label=f"{size} ({r['width']} wide, {r['depth']}+{r['depth']})"
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(TOKENS), [str(n) for n in TOKENS])
        ax.set_xlabel("tokens")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(groups: dict[str, dict[str, dict]], keys: list[tuple[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, (key, label) in zip(axes, keys):
        names = list(groups)
        series = sorted({s for g in groups.values() for s in g})
        width = 0.8 / len(series)
        for i, s in enumerate(series):
            xs = [j + i * width for j, g in enumerate(names) if s in groups[g]]
            ax.bar(xs, [groups[g][s][key] for g in names if s in groups[g]], width, label=s)
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(names))], names)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    if len({s for g in groups.values() for s in g}) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gen(gen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for schedule in SCHEDULES:
        pts = [(n, gen[f"{schedule}_{n}"]["gfd"]) for n in STEPS if f"{schedule}_{n}" in gen]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=schedule)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(STEPS), [str(n) for n in STEPS])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("gFD-fmnist (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("rfd", "held-out rFD-fmnist"), ("psnr", "held-out PSNR (dB)"), ("usage", "held-out codebook usage")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6))
    for ax, (key, label) in zip(axes, panels):
        for name, r in runs.items():
            pts = [(c["step"], c[key]) for c in r["curve"] if key in c]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep_curves(panels: list[tuple[str, dict[str, list[dict]]]], path: Path) -> None:
    """Held-out rFD-fmnist against the training step, one panel per comparison (title, {label: curve})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for label, curve in curves.items():
            pts = [(c["step"], c["rfd"]) for c in curve if "rfd" in c]
            style = "s--" if label.startswith("2-D") else "o-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("held-out rFD-fmnist")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
