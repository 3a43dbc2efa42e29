"""Run a Haystack pipeline for many queries at once, batching where the components allow.

Each component then runs once for all queries: through its ``run_batch`` (our BM25 and FAISS retrievers, the RRF
joiner, the ranker, score fusion: the ``run`` inputs, each a list over queries) or, for Haystack's
``SentenceTransformersTextEmbedder``, one ``embed`` call over all query texts (through an equally configured
``SentenceTransformersDocumentEmbedder``). A pipeline holding any other
component runs query by query through Haystack's own ``Pipeline.run``: the same results, without the batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from haystack import Pipeline
from tqdm.auto import tqdm

QUERY_INPUTS = ("query", "text")


def query_inputs(pipeline: Pipeline, query: str) -> dict[str, dict[str, Any]]:
    """``pipeline.run`` data that sends ``query`` to every open component input named ``query`` or ``text``."""
    data: dict[str, dict[str, Any]] = {}
    for name, inputs in pipeline.inputs().items():
        for input_name in inputs:
            if input_name in QUERY_INPUTS:
                data.setdefault(name, {})[input_name] = query
    return data


def _embed_texts(embedder, text: list[str]) -> dict[str, list]:
    """``SentenceTransformersTextEmbedder.run`` for many texts at once, through public API only: a
    ``SentenceTransformersDocumentEmbedder`` built from the text embedder's own ``to_dict`` parameters embeds them as
    documents (the same ``prefix + text + suffix``, encode settings and model: Haystack's backend factory hands both
    the same loaded model) in one ``embed`` call."""
    from haystack import Document
    from haystack.core.serialization import generate_qualified_class_name
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder

    data = embedder.to_dict()
    data["type"] = generate_qualified_class_name(SentenceTransformersDocumentEmbedder)
    data["init_parameters"]["progress_bar"] = False
    twin = SentenceTransformersDocumentEmbedder.from_dict(data)
    documents = twin.run(documents=[Document(content=one) for one in text])["documents"]
    return {"embedding": [document.embedding for document in documents]}


def _batch_function(component: Any):
    """The callable that runs ``component`` for all queries, or None when it has none."""
    if callable(getattr(component, "run_batch", None)):
        return component.run_batch
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder

    if type(component) is SentenceTransformersTextEmbedder:
        return lambda **inputs: _embed_texts(component, **inputs)
    return None


def batchable(pipeline: Pipeline) -> bool:
    """Whether every component of ``pipeline`` can run for all queries at once."""
    return all(_batch_function(component) is not None for _, component in pipeline.walk())


def run_batch(pipeline: Pipeline, queries: Sequence[str], progress: bool = False) -> list[dict[str, dict[str, Any]]]:
    """Every component's outputs for every query: ``[{component: {output: value}}]``, one dict a query, as
    ``pipeline.run(..., include_outputs_from=<all components>)`` gives them."""
    queries = list(queries)
    if not queries:
        return []
    if not batchable(pipeline):
        every = {name for name, _ in pipeline.walk()}
        return [pipeline.run(query_inputs(pipeline, query), include_outputs_from=every)
                for query in tqdm(queries, desc="pipeline", unit="query", disable=not progress)]
    import networkx

    pipeline.warm_up()
    open_inputs = query_inputs(pipeline, "")
    outputs: dict[str, dict[str, list]] = {}
    for name in networkx.topological_sort(pipeline.graph):
        inputs: dict[str, list] = {input_name: queries for input_name in open_inputs.get(name, {})}
        for sender, _, edge in pipeline.graph.in_edges(name, data=True):
            sent = outputs[sender][edge["from_socket"].name]
            receiver = edge["to_socket"].name
            if edge["to_socket"].is_variadic:  # one list of senders' values a query
                collected = inputs.setdefault(receiver, [[] for _ in queries])
                for values, value in zip(collected, sent):
                    values.append(value)
            else:
                inputs[receiver] = sent
        outputs[name] = _batch_function(pipeline.get_component(name))(**inputs)
    return [{name: {socket: values[i] for socket, values in produced.items()} for name, produced in outputs.items()}
            for i in range(len(queries))]
