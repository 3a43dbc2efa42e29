"""Where converted models (OpenVINO, ONNX) are cached: the Hugging Face assets-cache rules, with our own override.

``$RERANK_PIPELINE_CACHE`` when set; else ``$HF_ASSETS_CACHE/rerank_pipeline``, where ``HF_ASSETS_CACHE`` defaults
to ``$HF_HOME/assets``, ``HF_HOME`` to ``$XDG_CACHE_HOME/huggingface`` and ``XDG_CACHE_HOME`` to ``~/.cache``: the
folder ``huggingface_hub.cached_assets_path`` gives downstream libraries, so moving ``HF_HOME`` (e.g. to a larger
disk) moves these caches next to the Hub models they are converted from. Read at each call, not at import.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def default_cache_dir(kind: str = "onnx") -> Path:
    """The cache folder of ``kind`` (``openvino``, ``onnx``): ``$RERANK_PIPELINE_CACHE/<kind>``, else
    ``<HF assets cache>/rerank_pipeline/<kind>`` (see the module docstring)."""
    override = os.environ.get(CACHE_ENV_VAR)
    root = Path(override).expanduser() if override else hf_assets_cache() / LIBRARY_NAME
    return root / kind
