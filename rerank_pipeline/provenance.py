"""Provenance of a report: what produced these numbers, so a rerun can be compared with them.

:func:`collect` gathers the versions (ours, with the git commit when run from a checkout; Python; the key
libraries), the model (id and revision, or a hash of its weights), the dataset (name and a fingerprint of its
content), the seed, the device and the thread count. :class:`PhaseTimer` records wall time per phase (load,
index, embed, retrieve, score, metrics, total). Reports store both under ``provenance``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import weakref
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

KEY_LIBRARIES = ("torch", "transformers", "sentence-transformers", "haystack-ai", "bm25s", "faiss-cpu", "faiss-gpu",
                 "openvino", "ir-measures", "scipy", "numpy")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "openvino_model.bin", "model.onnx")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding this package (with ``-dirty`` when it has uncommitted changes), or None."""
    folder = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_provenance(model: str | Path | None, revision: str | None = None) -> dict[str, Any] | None:
    """A local folder: its path and the sha256 of its weights file; a Hub id: the id and the commit it resolves to
    in the local cache at ``revision`` (a commit, branch or tag; the default branch when ``None``)."""
    if model is None:
        return None
    folder = Path(str(model))
    if folder.is_dir():
        for name in WEIGHT_FILES:
            weights = folder / name
            if weights.is_file():
                return {"model": str(model), "weights": name, "sha256": file_sha256(weights)}
        return {"model": str(model), "weights": None}
    commit = None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model), "config.json", revision=revision)
        if isinstance(cached, str) and "/snapshots/" in cached:
            commit = cached.split("/snapshots/")[1].split("/")[0]
    except Exception:  # noqa: BLE001 - provenance must never stop a report
        commit = None
    return {"model": str(model), "revision": commit} | ({"requested_revision": revision} if revision else {})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> dict[str, Any]:
    """Name, sizes and a sha256 of the corpus, queries and qrels content (order-independent), so two runs can
    tell whether they read the same data whatever its source (BEIR folder, NanoBEIR, Hugging Face).

    The sha256 is that of ``json.dumps(part, sort_keys=True, ensure_ascii=False)`` of each part in turn; the
    corpus is serialized one document at a time (:func:`json_chunks`), read in id order, so a corpus read from
    its file (:class:`~rerank_pipeline.datasets.BeirCorpus`) is never held. A corpus object's digest is computed
    once per process (it cannot change; queries and qrels can, e.g. ``--max-queries``).
    """
    digest = _corpus_digest(dataset.corpus).copy()
    for part in (dataset.queries, dataset.qrels):
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return {"name": dataset.name, "documents": len(dataset.corpus), "queries": len(dataset.queries),
            "judged_queries": len(dataset.judged_queries()), "sha256": digest.hexdigest()}


_CORPUS_DIGESTS: dict[int, Any] = {}  # id(BeirCorpus) -> its digest, while the object lives


def _corpus_digest(corpus):
    """sha256 of the corpus's JSON (a hashlib object to continue); remembered for a read-only corpus object."""
    from rerank_pipeline.datasets import BeirCorpus, corpus_entries

    remembered = _CORPUS_DIGESTS.get(id(corpus)) if isinstance(corpus, BeirCorpus) else None
    if remembered is not None:
        return remembered
    digest = hashlib.sha256()
    for chunk in json_chunks(corpus_entries(corpus, sorted(corpus))):
        digest.update(chunk.encode("utf-8"))
    if isinstance(corpus, BeirCorpus):
        _CORPUS_DIGESTS[id(corpus)] = digest
        weakref.finalize(corpus, _CORPUS_DIGESTS.pop, id(corpus), None)
    return digest


def json_chunks(items: Iterable[tuple[str, Any]]) -> Iterable[str]:
    """``json.dumps(dict(items), sort_keys=True, ensure_ascii=False)`` in pieces, one item at a time (the keys of
    ``items``, strings, must come sorted and unique)."""
    yield "{"
    for index, (key, value) in enumerate(items):
        yield (", " if index else "") + json.dumps(key, ensure_ascii=False) + ": " \
            + json.dumps(value, sort_keys=True, ensure_ascii=False)
    yield "}"


def device_description(device: str | None = None) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if cuda and str(device).startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def collect(
    models: Mapping[str, str | Path | None] | None = None,
    datasets: Iterable = (),
    seed: int | None = None,
    device: str | None = None,
    timings: Mapping[str, float] | None = None,
    revisions: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The provenance block of a report (JSON-ready); ``revisions`` maps a role of ``models`` to the Hub revision
    it was loaded at (e.g. ``CrossEncoderRanker.revision``)."""
    return {
        "rerank_pipeline": package_version("rerank-pipeline"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {name: version for name in KEY_LIBRARIES if (version := package_version(name))},
        "models": {role: model_provenance(model, (revisions or {}).get(role))
                   for role, model in (models or {}).items() if model is not None},
        "datasets": [dataset_fingerprint(dataset) for dataset in datasets],
        "seed": seed,
        **device_description(device),
        "timings_s": {phase: round(seconds, 2) for phase, seconds in (timings or {}).items()},
    }


def header_lines(provenance: Mapping[str, Any]) -> list[str]:
    """A few console lines: versions, commit, device/threads, seed, data fingerprints."""
    libraries = ", ".join(f"{name} {version}" for name, version in provenance["libraries"].items())
    lines = [
        f"rerank-pipeline {provenance['rerank_pipeline']} (commit {provenance['git_commit'] or 'unknown'}), "
        f"Python {provenance['python']}; {libraries}",
        f"device {provenance['device']}" + (f" ({provenance['gpu']})" if provenance.get("gpu") else "")
        + f", {provenance['torch_threads']} threads, seed {provenance['seed']}",
    ]
    lines += [f"data {d['name']}: {d['documents']} documents, {d['judged_queries']} judged queries, sha256 {d['sha256'][:12]}"
              for d in provenance["datasets"]]
    return lines


def markdown_section(provenance: Mapping[str, Any]) -> str:
    """The provenance as a markdown section for report.md and the model card."""
    rows = [
        ("rerank-pipeline", f"{provenance['rerank_pipeline']} (commit {provenance['git_commit'] or 'unknown'})"),
        ("Python", f"{provenance['python']} on {provenance['platform']}"),
        *((name, version) for name, version in provenance["libraries"].items()),
        *((f"model ({role})", _model_text(model)) for role, model in provenance["models"].items()),
        *((f"dataset {d['name']}", f"{d['documents']} documents, {d['queries']} queries ({d['judged_queries']} judged), "
           f"sha256 {d['sha256']}") for d in provenance["datasets"]),
        ("seed", provenance["seed"]),
        ("device", provenance["device"] + (f" ({provenance['gpu']})" if provenance.get("gpu") else "")),
        ("torch threads", provenance["torch_threads"]),
        ("deterministic algorithms", provenance["deterministic_algorithms"]),
        *((f"time: {phase}", f"{seconds:.1f} s") for phase, seconds in provenance["timings_s"].items()),
    ]
    lines = ["### Provenance", "", "| item | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def _model_text(model: Mapping[str, Any]) -> str:
    if "sha256" in model:
        return f"{model['model']} ({model['weights']} sha256 {model['sha256']})"
    if "revision" in model:
        return f"{model['model']} (revision {model['revision'] or 'unknown'})"
    return str(model["model"])


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (Linux ``/proc``), or None where that is not available."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseTimer:
    """Wall time per named phase; ``with timer.phase("index"): ...`` adds to that phase. ``total`` runs from
    construction, or from the process's start with ``since_process_start`` (a command's whole wall time,
    interpreter start and imports included)."""

    def __init__(self, since_process_start: bool = False) -> None:
        self.started = time.perf_counter()
        if since_process_start:
            self.started -= seconds_since_process_start() or 0.0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def timings(self) -> dict[str, float]:
        """Every phase plus ``total``."""
        return {**self.seconds, "total": self.elapsed()}
