"""The first stage: Haystack document stores and retriever components, the only retrieval implementation.

:func:`build_first_stage` / :func:`open_first_stage` return a :class:`FirstStage` of one kind: ``bm25`` (embedded,
the default), ``dense`` (sentence-transformers + FAISS), ``hybrid`` (both, joined by
:class:`~rerank_pipeline.components.rrf.ReciprocalRankFusion`) or ``elasticsearch`` (BM25 on a cluster; with an
``embedding_model`` also kNN on a ``dense_vector`` field, joined the same way). It holds the stores and:

- ``index(documents)`` writes them (the dense side through Haystack's ``SentenceTransformersDocumentEmbedder``) and,
  with ``index_dir``, saves the folder (its ``index.json`` records the backend and settings);
- ``add_to(pipeline, candidates)`` adds the retrieval components to a Haystack pipeline (what serving uses);
- ``retrieve({qid: text}, top_k)`` runs those same components for many queries at once
  (:func:`rerank_pipeline.batch_run.run_batch`: one bm25s / FAISS search for all queries), as evaluation and
  training do.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from haystack import Document, Pipeline
from haystack.document_stores.types import DuplicatePolicy
from huggingface_hub.utils import are_progress_bars_disabled

from rerank_pipeline.components.bm25 import DEFAULT_META_FIELDS, EmbeddedBM25DocumentStore, EmbeddedBM25Retriever
from rerank_pipeline.components.faiss_store import FAISSDocumentStore, FAISSEmbeddingRetriever
from rerank_pipeline.components.index_folder import atomic_directory, read_settings, write_settings
from rerank_pipeline.components.rrf import FUSION_DEPTH, RRF_K, ReciprocalRankFusion
from rerank_pipeline.options import FIRST_STAGE_ALIASES, canonical_first_stage
from rerank_pipeline.rankings import Rankings, from_documents

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class FirstStageSide(Protocol):
    """One store of a :class:`FirstStage` and the retrievers that read it (:class:`BM25Side`, :class:`DenseSide`,
    :class:`~rerank_pipeline.components.elasticsearch.ElasticsearchSide`); a hybrid first stage has two.

    ``name`` names the side's sub-folder in a hybrid index folder; ``store`` is its Haystack document store.
    """

    name: str
    store: Any

    def write(self, documents: list[Document]) -> None:
        """Add or replace ``documents`` in the store (embedding them first where the side embeds)."""
        ...

    def write_to(self, folder: Path) -> None:
        """Write the store into the empty staging ``folder`` (the caller makes the swap atomic)."""
        ...

    def reopen(self, index_dir: str) -> None:
        """Persist later changes into ``index_dir``, just written by the caller."""
        ...

    def add_to(self, pipeline: Pipeline, top_k: int, prefix: str = "") -> list[str]:
        """Add the side's retrieval components to ``pipeline``, each retriever returning ``top_k`` documents a
        query; returns the names of the components whose ``documents`` output is a ranking."""
        ...


class BM25Side:
    """The embedded BM25 store and its retriever."""

    name = "bm25"

    def __init__(self, store: EmbeddedBM25DocumentStore):
        self.store = store

    def write(self, documents: list[Document]) -> None:
        """Add or replace documents."""
        self.store.write_documents(list(documents), policy=DuplicatePolicy.OVERWRITE)

    def write_to(self, folder: Path) -> None:
        """Write into an empty folder (not atomic), after applying what other processes wrote to the store's."""
        self.store.refresh()
        self.store.write_to(folder)

    def reopen(self, index_dir: str) -> None:
        """Persist later changes into ``index_dir`` (just written by the caller)."""
        self.store.attach(index_dir)

    def add_to(self, pipeline: Pipeline, top_k: int, prefix: str = "") -> list[str]:
        """Add the retriever; returns its name (a list: a side may add several retrievers)."""
        pipeline.add_component(f"{prefix}bm25_retriever", EmbeddedBM25Retriever(self.store, top_k=top_k))
        return [f"{prefix}bm25_retriever"]


class DenseSide:
    """A FAISS store of sentence-transformers embeddings, Haystack's embedders and our FAISS retriever."""

    name = "dense"

    def __init__(self, store: FAISSDocumentStore, model: str, meta_fields_to_embed: list[str],
                 batch_size: int = 64, device: str | None = None):
        self.store = store
        self.model = model
        self.meta_fields_to_embed = list(meta_fields_to_embed)
        self.batch_size = batch_size
        self.device = device

    def write(self, documents: list[Document]) -> None:
        """Embed and store the documents whose id, text or meta is new (a changed title changes the embedded text)."""
        stored = {doc.id: doc for doc in self.store.filter_documents()}
        fresh = [doc for doc in documents
                 if doc.id not in stored or stored[doc.id].content != doc.content or stored[doc.id].meta != doc.meta]
        if not fresh:
            return
        embedder = document_embedder(self.model, self.meta_fields_to_embed, self.batch_size, self.device,
                                     progress=len(fresh) > 1000 and not are_progress_bars_disabled())
        self.store.write_documents(embedder.run(documents=fresh)["documents"], policy=DuplicatePolicy.OVERWRITE)

    def write_to(self, folder: Path) -> None:
        """Write into an empty folder (not atomic); its settings record the model and the embedded meta fields."""
        self.store.refresh()
        self.store.embedding_model = self.model
        self.store.write_to(folder)
        write_settings(folder, {**read_settings(folder), "meta_fields_to_embed": self.meta_fields_to_embed})

    def reopen(self, index_dir: str) -> None:
        """Persist later changes into ``index_dir`` (just written by the caller)."""
        self.store.attach(index_dir)

    def add_to(self, pipeline: Pipeline, top_k: int, prefix: str = "") -> list[str]:
        """Add Haystack's query embedder and the FAISS retriever; returns the retriever's name (in a list)."""
        pipeline.add_component(f"{prefix}query_embedder", text_embedder(self.model, self.batch_size, self.device))
        pipeline.add_component(f"{prefix}dense_retriever", FAISSEmbeddingRetriever(self.store, top_k=top_k))
        pipeline.connect(f"{prefix}query_embedder.embedding", f"{prefix}dense_retriever.query_embedding")
        return [f"{prefix}dense_retriever"]


def _component_device(device: str | None):
    from haystack.utils import ComponentDevice

    return ComponentDevice.from_str(device) if device else None


def document_embedder(model: str, meta_fields_to_embed: list[str], batch_size: int = 64, device: str | None = None,
                      progress: bool = False):
    """Haystack's ``SentenceTransformersDocumentEmbedder`` as every dense side uses it (warmed up): normalized
    embeddings of the meta fields and the content joined by a space (the text BM25 indexes)."""
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder

    embedder = SentenceTransformersDocumentEmbedder(
        model=model, device=_component_device(device), batch_size=batch_size, normalize_embeddings=True,
        meta_fields_to_embed=list(meta_fields_to_embed), embedding_separator=" ", progress_bar=progress,
    )
    _warm_up(embedder, model)
    return embedder


def text_embedder(model: str, batch_size: int = 64, device: str | None = None):
    """Haystack's ``SentenceTransformersTextEmbedder`` for queries, matching :func:`document_embedder`."""
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder

    return SentenceTransformersTextEmbedder(model=model, device=_component_device(device), batch_size=batch_size,
                                            normalize_embeddings=True, progress_bar=False)


def _warm_up(component: Any, model: str) -> None:
    try:
        component.warm_up()
    except OSError as error:
        raise RuntimeError(
            f"cannot load embedding model {model!r} (a Hub id needs network or a cached copy; "
            f"a local sentence-transformers folder works offline): {str(error).splitlines()[0]}"
        ) from error


class FirstStage:
    """One first stage: its stores (``sides``, two for hybrid), indexing, and the retrieval components.

    When ``fused`` (default: more than one side; an Elasticsearch side with dense retrieval adds two retrievers) the
    retrievers' rankings are joined by reciprocal rank fusion (``rrf_k``), each retrieving
    ``max(candidates, fusion_depth)`` documents.
    """

    def __init__(self, name: str, sides: list[FirstStageSide], index_dir: str | None = None, rrf_k: int = RRF_K,
                 fusion_depth: int = FUSION_DEPTH, fused: bool | None = None):
        self.name = name
        self.sides: list[FirstStageSide] = sides
        self.index_dir = index_dir
        self.rrf_k = rrf_k
        self.fusion_depth = fusion_depth
        self.fused = len(sides) > 1 if fused is None else fused

    @property
    def store(self):
        """The document store of a one-sided first stage (``sides[i].store`` for hybrid)."""
        if len(self.sides) != 1:
            raise AttributeError(f"a {self.name} first stage has {len(self.sides)} stores: use sides[i].store")
        return self.sides[0].store

    def index(self, documents: Iterable[Document], total: int | None = None) -> int:
        """Add documents (an id already indexed is replaced); save the folder to ``index_dir`` when set.

        An embedded BM25 first stage that is still empty streams ``documents`` into the new folder
        (:meth:`EmbeddedBM25DocumentStore.stream_to`): memory never holds them. ``total`` (the expected count) gives
        progress an ETA. Returns how many documents were indexed.
        """
        if self.index_dir and self.name == "bm25" and not self.store.count_documents():
            with atomic_directory(self.index_dir) as staging:
                count = self.store.stream_to(staging, documents, total=total)
            self.sides[0].reopen(str(self.index_dir))
            return count
        documents = list({document.id: document for document in documents}.values())  # a repeated id: the last
        for side in self.sides:
            side.write(documents)
        if self.index_dir:
            self.save(self.index_dir)
        return len(documents)

    def save(self, index_dir: str) -> None:
        """Write the whole index to ``index_dir``, replacing the folder atomically."""
        index_dir = str(index_dir)
        with atomic_directory(index_dir) as staging:
            if len(self.sides) == 1:
                self.sides[0].write_to(staging)
            else:
                write_settings(staging, {"backend": self.name, "format_version": 1, "rrf_k": self.rrf_k,
                                         "fusion_depth": self.fusion_depth})
                for side in self.sides:
                    (staging / side.name).mkdir()
                    side.write_to(staging / side.name)
        for side in self.sides:
            side.reopen(index_dir if len(self.sides) == 1 else str(Path(index_dir) / side.name))

    def add_to(self, pipeline: Pipeline, candidates: int = 100, side_top_k: int | None = None) -> str:
        """Add the retrieval components for ``candidates`` documents a query; returns the one whose ``documents``
        output is the first stage's ranking. ``side_top_k`` asks each side for at least that many."""
        if not self.fused:
            return self.sides[0].add_to(pipeline, max(candidates, side_top_k or 0))[0]
        depth = max(candidates, self.fusion_depth, side_top_k or 0)
        outputs = [name for side in self.sides for name in side.add_to(pipeline, depth)]
        pipeline.add_component("joiner", ReciprocalRankFusion(self.rrf_k, self.fusion_depth, top_k=candidates))
        for output in outputs:
            pipeline.connect(f"{output}.documents", "joiner.documents")
        return "joiner"

    def pipeline(self, candidates: int = 100) -> Pipeline:
        """A Haystack pipeline of the retrieval components alone."""
        pipeline = Pipeline()
        self.add_to(pipeline, candidates)
        return pipeline

    def retrieve(self, queries: dict[str, str], top_k: int = 100) -> Rankings:
        """``{qid: [(doc_id, score), ...]}``, best first, at most ``top_k`` a query (a blank query finds nothing)."""
        return self.retrieve_with_side_rankings(queries, top_k)[0]

    def retrieve_with_side_rankings(self, queries: dict[str, str], top_k: int = 100,
                                    side_top_k: int | None = None) -> tuple[Rankings, list[Rankings]]:
        """The rankings of :meth:`retrieve` and, from the same run, each side's own ranking (its top
        ``side_top_k``, default ``top_k``, with its own scores): BM25 and dense for a fused first stage."""
        from rerank_pipeline.batch_run import run_batch

        side_top_k = side_top_k or top_k
        asked = {qid: text for qid, text in queries.items() if text.strip()}
        pipeline = Pipeline()
        final = self.add_to(pipeline, top_k, side_top_k)
        outputs = run_batch(pipeline, list(asked.values())) if asked else []
        sides = _side_outputs(pipeline, final) if self.fused else [final]
        side_rankings = [{qid: [] for qid in queries} for _ in sides]
        fused = {qid: [] for qid in queries}
        for qid, output in zip(asked, outputs):
            fused[qid] = from_documents(output[final]["documents"])[:top_k]
            for rankings, side in zip(side_rankings, sides):
                rankings[qid] = from_documents(output[side]["documents"])[:side_top_k]
        return fused, side_rankings


def _side_outputs(pipeline: Pipeline, joiner: str) -> list[str]:
    """The components feeding ``joiner``, in connection order."""
    return [sender for sender, receiver in pipeline.graph.in_edges(joiner)]




def _settings_kind(settings: dict[str, Any]) -> str:
    """The first-stage kind of an ``index.json`` (whose ``backend`` is ``faiss`` for a dense index)."""
    backend = str(settings.get("backend"))
    return FIRST_STAGE_ALIASES.get(backend, backend)


def _bm25(index_dir: str | None, options: dict[str, Any]) -> BM25Side:
    return BM25Side(EmbeddedBM25DocumentStore(
        index_dir=index_dir,
        k1=options.pop("k1", None),
        b=options.pop("b", None),
        analyzer=options.pop("analyzer", None),
        meta_fields_to_index=options.pop("meta_fields_to_index", None),
    ))


def _dense(index_dir: str | None, embedding_model: str | None, options: dict[str, Any]) -> DenseSide:
    settings = read_settings(index_dir) if index_dir else None
    recorded = settings.get("embedding_model") if settings else None
    if embedding_model and recorded and embedding_model != recorded:
        raise ValueError(
            f"the dense index in {index_dir} was embedded with {recorded!r}, not {embedding_model!r}; re-index to switch"
        )
    model = embedding_model or recorded or DEFAULT_EMBEDDING_MODEL
    store_options = {
        key: options.pop(key)
        for key in ("index_type", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "use_gpu")
        if key in options
    }
    store = FAISSDocumentStore(index_dir=index_dir, embedding_model=model, **store_options)
    fields = options.pop("meta_fields_to_embed", None)
    if fields is None:
        fields = settings.get("meta_fields_to_embed", DEFAULT_META_FIELDS) if settings else DEFAULT_META_FIELDS
    return DenseSide(store, model, fields, batch_size=options.pop("batch_size", 64), device=options.pop("device", None))


FLOAT_OPTIONS = ("k1", "b")
INT_OPTIONS = ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "batch_size", "rrf_k", "fusion_depth",
               "bulk_size", "num_candidates", "embedding_dims")


def _coerce_numbers(options: dict[str, Any]) -> dict[str, Any]:
    """Options may come from the command line as strings ("k1=0.9"): convert the numeric ones."""
    coerced = dict(options)
    for key, value in options.items():
        if isinstance(value, str) and key in FLOAT_OPTIONS + INT_OPTIONS:
            try:
                coerced[key] = float(value) if key in FLOAT_OPTIONS else int(value)
            except ValueError:
                raise ValueError(f"option {key} must be a number, got {value!r}") from None
    return coerced


def build_first_stage(
    kind: str = "bm25", *, index_dir: str | Path | None = None, embedding_model: str | None = None, **options: Any
) -> FirstStage:
    """A :class:`FirstStage` of the given kind, reopening ``index_dir`` when it holds an index.

    Options: bm25 ``k1``, ``b``, ``analyzer``, ``meta_fields_to_index``; dense ``index_type``
    (a ``faiss.index_factory`` string or flat|hnsw|ivf), ``hnsw_m``, ``ef_search``, ``nlist``, ``nprobe``,
    ``use_gpu``, ``batch_size``, ``device``, ``meta_fields_to_embed``; hybrid both plus ``rrf_k``, ``fusion_depth``;
    elasticsearch ``url``, ``index``, ``analyzer``, ``k1``, ``b``, ``bulk_size``, and with ``embedding_model``
    (dense retrieval on the cluster, fused with its BM25 by RRF) ``meta_fields_to_embed``, ``batch_size``,
    ``device``, ``num_candidates``, ``rrf_k``, ``fusion_depth`` (see :mod:`rerank_pipeline.components.elasticsearch`).
    """
    kind = canonical_first_stage(kind)
    index_dir = str(index_dir) if index_dir is not None else None
    settings = read_settings(index_dir) if index_dir else None
    if settings is not None and _settings_kind(settings) != kind:
        raise ValueError(f"{index_dir} holds a {_settings_kind(settings)!r} index, not {kind!r}")
    options = _coerce_numbers(options)
    fusion = {}
    sides: list[FirstStageSide]
    if kind == "bm25":
        sides = [_bm25(index_dir, options)]
    elif kind == "dense":
        sides = [_dense(index_dir, embedding_model, options)]
    elif kind == "hybrid":
        side_dir = (lambda name: str(Path(index_dir) / name)) if settings is not None else (lambda name: None)
        sides = [_bm25(side_dir("bm25"), options), _dense(side_dir("dense"), embedding_model, options)]
        fusion = {"rrf_k": options.pop("rrf_k", (settings or {}).get("rrf_k", RRF_K)),
                  "fusion_depth": options.pop("fusion_depth", (settings or {}).get("fusion_depth", FUSION_DEPTH))}
    else:
        from rerank_pipeline.components.elasticsearch import ElasticsearchSide

        cluster = ElasticsearchSide.create(settings=settings, options=options, embedding_model=embedding_model)
        sides = [cluster]
        if cluster.dense:  # hybrid on the cluster: BM25 and kNN retrievers joined by RRF
            fusion = {"rrf_k": cluster.settings["rrf_k"], "fusion_depth": cluster.settings["fusion_depth"],
                      "fused": True}
    if options:
        raise ValueError(f"unknown options for the {kind} first stage: {sorted(options)}")
    return FirstStage(kind, sides, index_dir=index_dir, **fusion)


def open_first_stage(index_dir: str | Path, **options: Any) -> FirstStage:
    """Reopen the index in ``index_dir`` with the backend its ``index.json`` records."""
    settings = read_settings(index_dir)
    if settings is None:
        raise FileNotFoundError(f"no index in {index_dir} (index.json missing); build one with `rerank-pipeline index`")
    return build_first_stage(_settings_kind(settings), index_dir=index_dir, **options)
