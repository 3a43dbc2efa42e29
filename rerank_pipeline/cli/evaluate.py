"""Placeholder: subcommands are registered here."""


def register(subparsers) -> None:
    """Add this module's subcommands to the ``rerank-pipeline`` parser."""
