"""Tables and numbers of the Fashion-MNIST report: formatting shared by its sections."""

from __future__ import annotations

HOW = (
    "Tokenizers: `python experiments/fashion_mnist.py train` (the recipe `{base}` with the overrides in the table, "
    "{steps:,} steps of 32 images, seed {seed}, train split). Scores: `titok eval recon MODEL fashion-mnist:test "
    "--num {num} --extractor fmnist --lpips none` (the first {num:,} test images, center crop 32x32; rFD-fmnist "
    "between originals and reconstructions; PSNR and SSIM per image, averaged)."
)


def _fmt(v: float, digits: int = 2) -> str:
    return f"{v:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _row(name: str, r: dict, note: str = "") -> list[str]:
    return [
        name,
        note,
        f"{r['params'] / 1e6:.2f}M",
        str(r["num_tokens"]),
        _fmt(r["rfd"], 3),
        _fmt(r["psnr"]),
        _fmt(r["ssim"], 3),
        _fmt(r["usage"], 2),
    ]


RECON_HEADER = ["model", "overrides", "params", "tokens", "rFD-fmnist", "PSNR (dB)", "SSIM", "codebook usage"]
