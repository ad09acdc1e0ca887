"""Start-up times of the CLI beside ``python -c "import torch"``, as ratios (machines differ; ratios travel).

    python benchmarks/startup.py                 # median of 3 runs each
    python benchmarks/startup.py --runs 5 -o startup.json

Rows: ``titok --help`` (must not import torch), ``titok info`` on the shipped Fashion-MNIST tokenizer (imports
torch, builds the model on the meta device, reads 1.4M weights; no compiler stack) and ``import torch`` itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "titok" / "assets" / "fashion_mnist" / "tokenizer"
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "titok --help": [sys.executable, "-m", "titok.cli", "--help"],
    "titok info": [sys.executable, "-m", "titok.cli", "info", str(TOKENIZER)],
}


def _seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each command; the median is reported")
    parser.add_argument("-o", "--out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    seconds = {name: _seconds(cmd, args.runs) for name, cmd in COMMANDS.items()}
    base = seconds["import torch"]
    rows = [
        {"command": name, "seconds": round(value, 3), "ratio_to_import_torch": round(value / base, 2)}
        for name, value in seconds.items()
    ]
    print(f"{'command':<16}{'seconds':>9}{'x import torch':>16}")
    for row in rows:
        print(f"{row['command']:<16}{row['seconds']:>9.2f}{row['ratio_to_import_torch']:>16.2f}")
    result = {"runs": args.runs, "python": sys.version.split()[0], "results": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
