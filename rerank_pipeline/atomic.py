"""Write one file atomically: readers see the old file or the new one, never a part of one.

The new content goes to a uniquely named temporary file in the target's folder (so two writers never share one),
is flushed and fsynced, gets an ordinary file's permissions (``0o666`` less the umask, where ``mkstemp`` gives
``0o600``) and is moved onto the target with ``os.replace``. On an exception the temporary file is removed and the
target is left as it was. Folders replaced as one generation (index folders, OpenVINO cache entries) use
:func:`rerank_pipeline.components.index_folder.atomic_directory` instead.

Usage:
    with atomic_write("report/summary.json") as out:
        json.dump(summary, out)
    with atomic_path("model.onnx") as temporary:  # for writers that take a file name
        torch.onnx.export(model, inputs, str(temporary))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal


def _file_permissions() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; when the block ends without error it replaces ``path``.

    The temporary name keeps ``path``'s suffix (``.tmp.onnx``, ``.tmp.png``), for writers that pick the format
    from it. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _file_permissions())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(
    path: str | Path, mode: Literal["w", "wb"] = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (``mode`` ``"w"`` text or ``"wb"`` bytes); when the block
    ends without error its content replaces ``path``.

    :raises ValueError: for a mode other than ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole file: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as temporary:
        text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
        with open(temporary, mode, **text) as out:
            yield out


def write_text_atomic(path: str | Path, text: str, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_write(path, newline=newline) as out:
        out.write(text)
    return Path(path)


def save_figure(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib ``figure`` to ``path`` atomically (:func:`atomic_path`; the format from its suffix), then
    close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=dpi)
    finally:
        plt.close(figure)
    return path
