"""Check, before any work, that an output path can be written; replace an output folder atomically.

Commands call these at start so a bad ``--output``/``--index-dir``/``--report-dir`` is a one-line error instead of a
traceback after the work is done. Nothing is created by a check.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output path cannot be used: a file, a path under a file, an unwritable parent, or a folder of other files."""


def check_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Raise :class:`OutputPathError` unless ``path`` is a folder, or can be created as one, by this process.

    Refuses an existing file, a path under a file (``FILE/sub``) and a folder (or nearest existing parent) that
    is not writable. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} exists and is a file, not a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputPathError(f"{what} {path} cannot be created: {existing} is a file")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path} cannot be written: no write permission on {existing}")
    return path


def is_empty_folder(path: str | Path) -> bool:
    """True for an existing folder without entries."""
    path = Path(path)
    return path.is_dir() and next(path.iterdir(), None) is None


def check_replaceable_folder(
    path: str | Path, marker: str | None, what: str, overwrite: bool = False, overwrite_option: str | None = None
) -> Path:
    """Check ``path`` can be written and then replaced as a whole (by ``index_folder.atomic_directory``).

    Allowed: a new path, an empty folder, a folder holding ``marker`` (a previous output of the same command) or,
    with ``overwrite`` (or no ``marker``), any folder. Anything else is refused, so a folder of other files is
    never deleted.
    """
    path = check_writable_folder(path, what)
    if path.is_dir() and not overwrite and marker and not is_empty_folder(path) and not (path / marker).exists():
        hint = f", or pass {overwrite_option} to replace it" if overwrite_option else ""
        raise OutputPathError(
            f"{what} {path} already holds other files (no {marker}); nothing was changed: choose a new or empty "
            f"folder{hint}"
        )
    return path
