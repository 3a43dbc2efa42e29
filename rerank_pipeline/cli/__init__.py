"""The ``rerank-pipeline`` command: ``index``, ``search``, ``eval`` and ``train`` subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Haystack's telemetry retries against an unreachable host offline; a CLI run should not pay for that.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from rerank_pipeline import __version__  # noqa: E402
from rerank_pipeline.cli import evaluate, retrieval, train  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-pipeline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (retrieval, evaluate, train):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; each subcommand sets ``func`` returning an exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"rerank-pipeline {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        kept = interrupt.args[0] if interrupt.args else "nothing written"
        print(f"rerank-pipeline {args.command}: interrupted; {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
