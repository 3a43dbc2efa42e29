"""Assemble first stage -> ``CrossEncoderRanker`` -> top-k as an ordinary Haystack ``Pipeline``.

The first stage is read from an index folder written by ``rerank-pipeline index``
(or :func:`rerank_pipeline.first_stage.build_first_stage` with ``index_dir``):
embedded BM25, FAISS, hybrid (``ReciprocalRankFusion`` of both) or Elasticsearch. The
pipeline serializes to YAML (``pipeline.dumps()``) and loads back with
``Pipeline.loads``; stores reopen their folders, so the YAML stays small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haystack import Document, Pipeline

from rerank_pipeline.batch_run import query_inputs
from rerank_pipeline.components.index_folder import require_index
from rerank_pipeline.first_stage import open_first_stage


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
) -> Pipeline:
    """First stage from ``index_dir`` (``candidates`` documents) -> ``CrossEncoderRanker(ranker_model)`` -> ``top_k``.

    Without ``ranker_model`` the pipeline stops at the first stage, which then returns ``top_k`` documents.
    Run it with :func:`search`, or ``pipeline.run`` feeding the query to every input in :func:`query_inputs`.
    """
    if top_k <= 0 or candidates <= 0:
        raise ValueError(f"top_k and candidates must be positive (got {top_k}, {candidates})")
    pipeline = Pipeline()
    last = add_first_stage(pipeline, index_dir, candidates=candidates if ranker_model else top_k)
    if ranker_model:
        from rerank_pipeline.components import CrossEncoderRanker

        if Path(ranker_model).expanduser().is_dir():  # a local folder, recorded absolute like the index
            ranker_model = Path(ranker_model).expanduser().resolve()

        pipeline.add_component("ranker", CrossEncoderRanker(model=str(ranker_model), top_k=top_k, **(ranker_options or {})))
        pipeline.connect(f"{last}.documents", "ranker.documents")
    return pipeline


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
