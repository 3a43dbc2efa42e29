"""Assemble first stage -> ``CrossEncoderRanker`` -> top-k as an ordinary Haystack ``Pipeline``.

The first stage is read from an index folder written by ``rerank-pipeline index``
(or :func:`rerank_pipeline.first_stage.build_first_stage` with ``index_dir``):
embedded BM25, FAISS, hybrid (``ReciprocalRankFusion`` of both) or Elasticsearch. The
pipeline serializes to YAML (``pipeline.dumps()``) and loads back with
``Pipeline.loads``; stores reopen their folders, so the YAML stays small.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from haystack import Document, Pipeline

from rerank_pipeline.batch_run import query_inputs
from rerank_pipeline.components.index_folder import require_index
from rerank_pipeline.components.score_fusion import FusionChoice, resolve_fusion
from rerank_pipeline.first_stage import open_first_stage

logger = logging.getLogger(__name__)


def add_first_stage(pipeline: Pipeline, index_dir: str | Path, candidates: int = 100) -> str:
    """Add the first stage stored in ``index_dir``; returns the component whose ``documents`` output feeds the ranker.

    The folder is recorded as an absolute path, so the serialized pipeline opens the same index from any working
    directory (and fails naming the folder if it was moved or deleted).
    """
    index_dir = Path(index_dir).expanduser().resolve()
    require_index(index_dir)
    return open_first_stage(index_dir).add_to(pipeline, candidates)


def build_pipeline(
    index_dir: str | Path,
    *,
    ranker_model: str | None = None,
    top_k: int = 10,
    candidates: int = 100,
    ranker_options: dict[str, Any] | None = None,
    fusion: str = "model",
) -> Pipeline:
    """First stage from ``index_dir`` (``candidates`` documents) -> ``CrossEncoderRanker(ranker_model)`` -> ``top_k``.

    ``fusion`` orders the ranker's output (see :func:`~rerank_pipeline.components.score_fusion.resolve_fusion`):
    ``"model"`` (default) adds a ``RerankerScoreFusion`` with the weight of the model folder's ``fusion.json`` when
    it has one, ``"none"`` keeps the reranker's order, ``"rrf"`` adds RRF of the first stage's and the ranker's
    orders. With a fusion the ranker returns every candidate and the fusion cuts to ``top_k``.
    Without ``ranker_model`` the pipeline stops at the first stage, which then returns ``top_k`` documents.
    Run it with :func:`search`, or ``pipeline.run`` feeding the query to every input in :func:`query_inputs`.
    """
    if top_k <= 0 or candidates <= 0:
        raise ValueError(f"top_k and candidates must be positive (got {top_k}, {candidates})")
    if ranker_model and Path(ranker_model).expanduser().is_dir():  # a local folder, recorded absolute like the index
        ranker_model = str(Path(ranker_model).expanduser().resolve())
    choice = resolve_fusion(ranker_model, fusion)
    pipeline = Pipeline()
    last = add_first_stage(pipeline, index_dir, candidates=candidates if ranker_model else top_k)
    if ranker_model:
        from rerank_pipeline.components import CrossEncoderRanker

        ranker_top_k = top_k if choice.method == "none" else candidates
        pipeline.add_component("ranker", CrossEncoderRanker(model=ranker_model, top_k=ranker_top_k, **(ranker_options or {})))
        pipeline.connect(f"{last}.documents", "ranker.documents")
        add_reranker_fusion(pipeline, choice, first_stage=last, top_k=top_k, candidates=candidates)
    logger.info(choice.summary())
    return pipeline


def add_reranker_fusion(pipeline: Pipeline, choice: FusionChoice, first_stage: str, top_k: int, candidates: int) -> None:
    """Add ``choice``'s fusion (if any, :meth:`FusionChoice.component`) as component ``fusion``, fed by the first
    stage's ``documents`` and ``ranker.documents``; its output is then the pipeline's only unconsumed ``documents``."""
    fusion = choice.component(top_k=top_k, depth=candidates)
    if fusion is None:
        return
    pipeline.add_component("fusion", fusion)
    if choice.method == "model":
        pipeline.connect("ranker.documents", "fusion.documents")
        pipeline.connect(f"{first_stage}.documents", "fusion.first_stage_documents")
    else:  # RRF: the first stage's order, then the ranker's
        pipeline.connect(f"{first_stage}.documents", "fusion.documents")
        pipeline.connect("ranker.documents", "fusion.documents")


def output_component(pipeline: Pipeline) -> str:
    """The one component whose ``documents`` output no other component consumes: the pipeline's result."""
    names = [name for name, sockets in pipeline.outputs().items() if "documents" in sockets]
    if len(names) != 1:
        raise ValueError(f"expected one component to output documents, got {names or 'none'}")
    return names[0]


def ranker_input_component(pipeline: Pipeline) -> str | None:
    """The component feeding the first ``CrossEncoderRanker``'s ``documents`` (the first stage), or None."""
    from rerank_pipeline.components.ranker import CrossEncoderRanker

    for name, component in pipeline.walk():
        if isinstance(component, CrossEncoderRanker):
            senders = [sender for sender, _, edge in pipeline.graph.in_edges(name, data=True)
                       if edge["to_socket"].name == "documents"]
            return senders[0] if senders else None
    return None


def score_cache_infos(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """Each ``CrossEncoderRanker`` of ``pipeline`` (by component name) -> its ``score_cache_info()``."""
    from rerank_pipeline.components.ranker import CrossEncoderRanker

    return {name: component.score_cache_info() for name, component in pipeline.walk()
            if isinstance(component, CrossEncoderRanker)}


@contextmanager
def score_caches_off(pipeline: Pipeline) -> Iterator[list[str]]:
    """Turn off the score cache of every ``CrossEncoderRanker`` of ``pipeline`` inside the ``with`` block (so a
    measurement scores every pair, e.g. an exported pipeline's under ``eval``); yields the names of those that had one,
    whose caches start empty again at their own size afterwards."""
    from rerank_pipeline.components.ranker import CrossEncoderRanker

    cached = {name: component for name, component in pipeline.walk()
              if isinstance(component, CrossEncoderRanker) and component.score_cache}
    sizes = {name: component.score_cache for name, component in cached.items()}
    for component in cached.values():
        component.set_score_cache(0)
    try:
        yield list(cached)
    finally:
        for name, component in cached.items():
            component.set_score_cache(sizes[name])


def search(pipeline: Pipeline, query: str) -> list[Document]:
    """Run the pipeline for one query and return the final documents, best first."""
    if not query.strip():
        raise ValueError("the query is empty")
    return pipeline.run(query_inputs(pipeline, query))[output_component(pipeline)]["documents"]


TRUSTED_MODULES = ["rerank_pipeline"]


def load_pipeline(yaml_text: str) -> Pipeline:
    """``Pipeline.loads`` that trusts this package's components (Haystack's own are trusted by default).

    Elsewhere (e.g. Hayhooks) set ``HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline`` or pass
    ``allowed_modules=["rerank_pipeline"]`` to ``Pipeline.loads``.
    """
    return Pipeline.loads(yaml_text, allowed_modules=TRUSTED_MODULES)


_REFUSED_MODULE = re.compile(r"Refusing to deserialize a class from module '([^']+)'")


def load_pipeline_file(path: str | Path) -> Pipeline:
    """:func:`load_pipeline` of a YAML file; one it cannot load raises ``ValueError`` in one line naming the file
    and the cause (for a class or callable outside the deserialization allowlist, its name, e.g. ``os.system``)."""
    from haystack.core.errors import DeserializationError, PipelineError

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return load_pipeline(text)
    except (DeserializationError, PipelineError) as error:
        raise ValueError(f"{path}: {_why_not_loaded(error, text)}") from error


def _why_not_loaded(error: BaseException, yaml_text: str) -> str:
    """One line: the refused class or callable, else Haystack's first line and its cause's."""
    causes = [error]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    for cause in causes:
        refused = _REFUSED_MODULE.search(str(cause))
        if refused:
            module = refused.group(1)
            name = next((text for text in _strings(yaml_text) if text == module or text.startswith(module + ".")), module)
            return (f"refused {name}: module '{module}' is not on the deserialization allowlist (rerank_pipeline, "
                    "Haystack's own modules, $HAYSTACK_DESERIALIZATION_ALLOWLIST)")
    top = _first_line(error).removesuffix(" with the following data:").rstrip(".:")
    return f"{top}: {_first_line(causes[-1])}" if len(causes) > 1 else top


def _strings(yaml_text: str) -> list[str]:
    """Every string in a YAML document (keys and values), in order; none when it does not parse."""
    import yaml

    try:
        stack, found = [yaml.safe_load(yaml_text)], []
    except yaml.YAMLError:
        return []
    while stack:
        item = stack.pop(0)
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack[:0] = [value for pair in item.items() for value in pair]
        elif isinstance(item, list):
            stack[:0] = item
    return found


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
