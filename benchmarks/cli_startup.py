"""Start-up time of the ``rerank-pipeline`` command, as ratios to a bare interpreter start in the same run.

    python benchmarks/cli_startup.py [--rounds 3] [--beir-dir ../shared/datasets/cranfield]

Times ``--help``, ``--version`` and a first-stage-only ``search --no-rerank`` (on a BM25 index of the BEIR folder
built once in a temp folder), each a fresh process, interleaved over rounds (best round kept); the anchor is
``python -c pass`` in the same rounds. Nearly all of a command's start is imports (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default: 3)")
    parser.add_argument("--beir-dir", default=str(REPO.parent / "shared" / "datasets" / "cranfield"), help="BEIR folder indexed for the search command")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cli = [sys.executable, "-m", "rerank_pipeline"]
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = str(Path(scratch) / "index")
        subprocess.run([*cli, "index", "--beir-dir", args.beir_dir, "--index-dir", index_dir], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "anchor: python -c pass": [sys.executable, "-c", "pass"],
            "rerank-pipeline --help": [*cli, "--help"],
            "rerank-pipeline --version": [*cli, "--version"],
            "rerank-pipeline search --no-rerank": [*cli, "search", "boundary layer", "--index-dir", index_dir, "--no-rerank"],
        }
        best = {name: float("inf") for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                best[name] = min(best[name], seconds(command, env))
    anchor = best["anchor: python -c pass"]
    print(f"load average {os.getloadavg()[0]:.1f}; best of {args.rounds} rounds")
    print(f"| {'command':<36} | seconds | ratio to anchor |\n|{'-' * 38}|---------|-----------------|")
    for name, value in best.items():
        print(f"| {name:<36} | {value:7.2f} | {value / anchor:15.1f} |")


if __name__ == "__main__":
    main()
