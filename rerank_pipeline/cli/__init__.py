"""The ``rerank-pipeline`` command: ``index``, ``search``, ``eval``, ``train``, ``serve`` and ``export`` subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from contextlib import contextmanager

# Haystack's telemetry retries against an unreachable host offline; a CLI run should not pay for that.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from rerank_pipeline import __version__  # noqa: E402
from rerank_pipeline.options import positive_int  # noqa: E402, F401  (re-exported: argparse type)

# Each module has ``register(subparsers)`` and imports only the standard library at its top (heavy imports live
# in its handlers), so ``--help`` and ``--version`` start fast. A new subcommand module joins by adding its name.
SUBCOMMAND_MODULES = (
    "rerank_pipeline.cli.retrieval",
    "rerank_pipeline.cli.evaluate",
    "rerank_pipeline.cli.train",
    "rerank_pipeline.cli.serve",
    "rerank_pipeline.cli.tune",
)


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default once: appended as ``(default: X)`` unless it is None/False/empty or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default in (None, False, [], argparse.SUPPRESS)
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        """A bad option is one line, ``PROG: error: ...`` and status 2, like every other bad input (no usage dump)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rerank-pipeline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def add_progress_flag(
    parser: argparse.ArgumentParser, *aliases: str,
    help: str = "hide every progress bar (indexing, embedding, model loading, scoring)",
) -> None:
    """``--no-progress`` (the same on every subcommand): no progress bar at all, ours or a library's."""
    parser.add_argument("--no-progress", *aliases, dest="no_progress", action="store_true", help=help)


@contextmanager
def progress_bars(enabled: bool):
    """Turn off every progress bar while the command runs when ``enabled`` is False.

    huggingface_hub's switch is the one transformers reads when imported and our own automatic bars (large
    indexing runs) follow; transformers keeps its own copy once imported. Bars a caller asks for explicitly
    follow the command's flag. The previous state is restored afterwards.
    """
    if enabled:
        yield
        return
    from huggingface_hub import utils as hub

    was_disabled = hub.are_progress_bars_disabled()
    hub.disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hub.enable_progress_bars()
            if "transformers.utils.logging" in sys.modules:  # imported during the run, with bars off
                sys.modules["transformers.utils.logging"].enable_progress_bar()


def first_line(error: BaseException) -> str:
    """The first non-blank line of an error's message (its type name when it has none): one line on the console."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; each subcommand sets ``func`` returning an exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with progress_bars(not getattr(args, "no_progress", False)):
            return args.func(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # bad input (e.g. a corrupt index folder)
        logging.getLogger(__name__).info("the error in full (-v):", exc_info=error)
        print(f"rerank-pipeline {args.command}: error: {first_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        kept = interrupt.args[0] if interrupt.args else "nothing written"
        print(f"rerank-pipeline {args.command}: interrupted; {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
