"""Where and under which key converted models (OpenVINO) are cached, and the lock under which an entry is built.

The folder follows the Hugging Face assets-cache rules, with our own override:

``$RERANK_PIPELINE_CACHE`` when set; else ``$HF_ASSETS_CACHE/rerank_pipeline``, where ``HF_ASSETS_CACHE`` defaults
to ``$HF_HOME/assets``, ``HF_HOME`` to ``$XDG_CACHE_HOME/huggingface`` and ``XDG_CACHE_HOME`` to ``~/.cache``: the
folder ``huggingface_hub.cached_assets_path`` gives downstream libraries, so moving ``HF_HOME`` (e.g. to a larger
disk) moves these caches next to the Hub models they are converted from. Read at each call, not at import.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

CACHE_ENV_VAR = "RERANK_PIPELINE_CACHE"
LIBRARY_NAME = "rerank_pipeline"


def hf_assets_cache() -> Path:
    """``$HF_ASSETS_CACHE``, else ``$HF_HOME/assets``, else ``$XDG_CACHE_HOME/huggingface/assets``, else
    ``~/.cache/huggingface/assets`` (huggingface_hub's rules, read from the environment now)."""
    if os.environ.get("HF_ASSETS_CACHE"):
        return Path(os.environ["HF_ASSETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "assets"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "assets"


def default_cache_dir(kind: str) -> Path:
    """The cache folder of ``kind`` (e.g. ``openvino``): ``$RERANK_PIPELINE_CACHE/<kind>``, else
    ``<HF assets cache>/rerank_pipeline/<kind>`` (see the module docstring)."""
    override = os.environ.get(CACHE_ENV_VAR)
    root = Path(override).expanduser() if override else hf_assets_cache() / LIBRARY_NAME
    return root / kind


def hub_revision(
    model_id: str, hub_cache_dir: str | Path | None = None, revision: str | None = None
) -> str | None:
    """The commit a Hub model id (at ``revision``: a commit, branch or tag; default branch when ``None``) resolves to
    in the local Hugging Face cache (what loading it reads), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json", cache_dir=hub_cache_dir, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None  # .../snapshots/<commit>/config.json


def model_fingerprint(
    model_id: str,
    input_names: list[str],
    hub_cache_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    revision: str | None = None,
) -> str:
    """A short hash naming one cache folder: local files (name, size, mtime), or the Hub id and the commit it
    resolves to at ``revision`` (so an updated Hub model is converted again), the inputs, and ``extra`` (e.g.
    converter versions)."""
    # "graph" names what the conversion holds: 2 = the last layer computed for the first token only.
    parts: dict[str, Any] = {"model": model_id, "inputs": input_names, "torch": torch.__version__, "graph": 2}
    parts.update(extra or {})
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        parts["model"] = str(folder.resolve())
        parts["files"] = sorted(
            (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()
        )
    else:
        parts["revision"] = hub_revision(model_id, hub_cache_dir, revision) or revision
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def cache_entry_lock(entry: Path) -> Iterator[None]:
    """Hold the lock of one cache entry (``<entry>.lock`` beside it) while it is built.

    Other threads and processes building the same entry wait here (as long as the build takes); the caller
    checks again for the entry once it holds the lock, so only the first one builds it.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry.with_name(entry.name + ".lock"))):
        yield
