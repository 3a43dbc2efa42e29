"""Retrieval collections in one in-memory shape: corpus, queries, graded qrels.

Everything downstream (first stage, reranker, metrics, training) reads a
:class:`RetrievalDataset`; loaders turn on-disk or Hub formats into it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from haystack import Document


class DatasetError(ValueError):
    """A collection on disk or on the Hub is missing a part or is inconsistent."""


@dataclass
class RetrievalDataset:
    """A test collection.

    ``corpus`` maps a document id to ``{"title": ..., "text": ...}``; ``queries``
    maps a query id to its text; ``qrels`` maps a query id to ``{doc_id: gain}``
    (gain > 0 is relevant). ``rankings`` optionally holds a published first-stage
    ranking per query (doc ids, best first), as NanoBEIR's BM25 lists.
    """

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    rankings: dict[str, list[str]] | None = field(default=None)

    def judged_queries(self) -> dict[str, str]:
        """Queries that have at least one relevant document, in qrels order."""
        return {qid: self.queries[qid] for qid, rels in self.qrels.items() if any(g > 0 for g in rels.values())}

    def positives(self, query_id: str) -> list[str]:
        """Ids of the documents judged relevant (gain > 0) for a query."""
        return [doc_id for doc_id, gain in self.qrels.get(query_id, {}).items() if gain > 0]

    def document_text(self, doc_id: str) -> str:
        """The text a model sees for a document (the BEIR ``text`` field)."""
        return self.corpus[doc_id]["text"]

    def documents(self) -> list[Document]:
        """The corpus as Haystack documents: ``id`` is the corpus id, ``meta['title']`` the title."""
        return [
            Document(id=doc_id, content=doc["text"], meta={"title": doc.get("title", "")})
            for doc_id, doc in self.corpus.items()
        ]

    def validate(self) -> None:
        """Raise :class:`DatasetError` on an empty query set or a qrels row naming an unknown id."""
        if not self.qrels:
            raise DatasetError(f"{self.name}: no judged queries (the qrels are empty)")
        for qid, rels in self.qrels.items():
            if qid not in self.queries:
                raise DatasetError(f"{self.name}: qrels name query {qid!r}, which is not in the queries")
            for doc_id in rels:
                if doc_id not in self.corpus:
                    raise DatasetError(
                        f"{self.name}: qrels for query {qid!r} name document {doc_id!r}, which is not in the corpus"
                    )
        for qid, ranked in (self.rankings or {}).items():
            unknown = [doc_id for doc_id in ranked if doc_id not in self.corpus]
            if unknown:
                raise DatasetError(
                    f"{self.name}: the ranking for query {qid!r} names documents not in the corpus: {unknown[:5]}"
                )


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSON-lines file; a malformed line raises :class:`DatasetError` naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{line_number}: not valid JSON ({error.msg})") from error
    return rows


def load_corpus(path: str | Path) -> dict[str, dict[str, str]]:
    """Load a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) into ``{id: {title, text}}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"corpus file not found: {path}")
    corpus = {}
    for row in read_jsonl(path):
        if "_id" not in row or "text" not in row:
            raise DatasetError(f"{path}: every line needs '_id' and 'text' (got keys {sorted(row)})")
        corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row["text"] or ""}
    if not corpus:
        raise DatasetError(f"corpus is empty: {path}")
    return corpus


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Load a BEIR qrels TSV (header ``query-id corpus-id score``) into ``{qid: {doc_id: gain}}``."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"qrels file is empty: {path}")
        first_line = 2
        if not header or header[0] != "query-id":  # headerless file: the first row is data
            reader, first_line = iter([header, *reader]), 1
        for line_number, row in enumerate(reader, start=first_line):
            if not row:
                continue
            if len(row) < 3:
                raise DatasetError(f"{path}:{line_number}: expected 'query-id corpus-id score', got {row}")
            try:
                gain = int(float(row[2]))
            except ValueError as error:
                raise DatasetError(
                    f"{path}:{line_number}: score {row[2]!r} is not a number (a header row must start with 'query-id')"
                ) from error
            qrels.setdefault(row[0], {})[row[1]] = gain
    return qrels


def load_beir(path: str | Path, split: str = "test", name: str | None = None) -> RetrievalDataset:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    Only queries judged in the split are kept, so a split's queries never leak
    into another split.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"BEIR folder not found: {root}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DatasetError(f"split {split!r} not found in {root} (qrels/{split}.tsv missing; available: {available})")
    corpus = load_corpus(root / "corpus.jsonl")
    queries_path = root / "queries.jsonl"
    if not queries_path.is_file():
        raise DatasetError(f"queries file not found: {queries_path}")
    query_rows = read_jsonl(queries_path)
    for row in query_rows:
        if "_id" not in row or "text" not in row:
            raise DatasetError(f"{queries_path}: every line needs '_id' and 'text' (got keys {sorted(row)})")
    all_queries = {str(row["_id"]): row["text"] for row in query_rows}
    qrels = load_qrels(qrels_path)
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    dataset = RetrievalDataset(name=name or root.name, corpus=corpus, queries=queries, qrels=qrels)
    dataset.validate()
    return dataset


# --- Hugging Face datasets: NanoBEIR and collections in BEIR schema ---------------------------------------------

NANOBEIR_COLLECTION_ID = "sentence-transformers/NanoBEIR-en"
"""The NanoBEIR collection that sentence-transformers' ``CrossEncoderNanoBEIREvaluator`` reads by default."""

NANOBEIR_PER_DATASET_ID = "sentence-transformers/Nano{name}-bm25"
"""One Hub dataset per NanoBEIR set (``corpus``, ``queries``, ``relevance`` subsets), read by earlier releases."""

NANOBEIR_NAMES = {
    "climatefever": "ClimateFEVER",
    "dbpedia": "DBPedia",
    "fever": "FEVER",
    "fiqa2018": "FiQA2018",
    "hotpotqa": "HotpotQA",
    "msmarco": "MSMARCO",
    "nfcorpus": "NFCorpus",
    "nq": "NQ",
    "quoraretrieval": "QuoraRetrieval",
    "scidocs": "SCIDOCS",
    "arguana": "ArguAna",
    "scifact": "SciFact",
    "touche2020": "Touche2020",
}
"""Short NanoBEIR names (as given to ``CrossEncoderNanoBEIREvaluator``) and their spelling in Hub split names."""


def nanobeir_dataset_name(name: str) -> str:
    """``"msmarco"`` -> ``"NanoMSMARCO"``; also accepts ``"NanoMSMARCO"``; unknown names raise :class:`DatasetError`."""
    key = name.lower().removeprefix("nano")
    if key not in NANOBEIR_NAMES:
        raise DatasetError(f"{name!r} is not a NanoBEIR dataset; valid names: {sorted(NANOBEIR_NAMES)}")
    return f"Nano{NANOBEIR_NAMES[key]}"


def _load_hf_split(dataset_id: str, subset: str | None, split: str | None, required_columns: list[str], cache_dir=None):
    """Load one split of one subset of a Hub dataset (or a local folder in the Hub's layout).

    ``split=None`` takes the subset's only split (BEIR corpora name it ``corpus``/``queries``).
    """
    from datasets import DatasetDict, load_dataset

    where = f"subset {subset!r} of {dataset_id!r}" if subset else repr(dataset_id)
    try:
        loaded = load_dataset(dataset_id, subset, split=split, cache_dir=cache_dir)
    except ValueError as error:
        if "split" in str(error).lower():
            raise DatasetError(f"split {split!r} not found in {where}: {error}") from error
        raise DatasetError(f"could not load {where}: {error}") from error
    except Exception as error:  # the Hub client raises many kinds (offline, missing repo, missing config)
        raise DatasetError(f"could not load {where} (split {split!r}): {type(error).__name__}: {error}") from error
    if isinstance(loaded, DatasetDict):
        if len(loaded) != 1 and subset not in loaded:
            raise DatasetError(f"{where} has splits {sorted(loaded)}; name the one to use")
        loaded = loaded[subset] if subset in loaded else next(iter(loaded.values()))
    missing = set(required_columns) - set(loaded.column_names)
    if missing:
        raise DatasetError(f"{where} (split {split!r}) lacks columns {sorted(missing)}; it has {loaded.column_names}")
    return loaded


def _corpus_from_rows(rows) -> dict[str, dict[str, str]]:
    titles = rows["title"] if "title" in rows.column_names else [""] * len(rows)
    return {
        str(doc_id): {"title": title or "", "text": text or ""}
        for doc_id, title, text in zip(rows["_id"], titles, rows["text"])
    }


def _as_id_list(value) -> list[str]:
    return [str(item) for item in value] if isinstance(value, (list, tuple)) else [str(value)]


def load_nanobeir(
    name: str,
    dataset_id: str | None = None,
    layout: str = "collection",
    cache_dir: str | None = None,
) -> RetrievalDataset:
    """Load one NanoBEIR set with its published BM25 ranking into a :class:`RetrievalDataset`.

    ``layout="collection"`` (default) reads what sentence-transformers' ``CrossEncoderNanoBEIREvaluator`` reads:
    ``dataset_id`` (default ``sentence-transformers/NanoBEIR-en``) with subsets ``corpus``, ``queries``, ``qrels``
    and ``bm25``, each under the split ``Nano{Name}``. ``layout="per-dataset"`` reads
    ``sentence-transformers/Nano{Name}-bm25`` (``{name}`` in ``dataset_id`` is filled in) with subsets
    ``corpus``, ``queries`` and ``relevance`` (``positive-corpus-ids``, ``bm25-ranked-ids``), split ``train``.
    ``dataset_id`` may also be a local folder in the same layout. Every qrels row counts as relevant (gain from a
    ``score`` column when there is one, else 1); only queries with a BM25 list are kept, as the evaluator does.
    """
    split_name = nanobeir_dataset_name(name)
    human = split_name.removeprefix("Nano")
    if layout == "collection":
        source = dataset_id or NANOBEIR_COLLECTION_ID
        corpus = _corpus_from_rows(_load_hf_split(source, "corpus", split_name, ["_id", "text"], cache_dir))
        query_rows = _load_hf_split(source, "queries", split_name, ["_id", "text"], cache_dir)
        qrels_rows = _load_hf_split(source, "qrels", split_name, ["query-id", "corpus-id"], cache_dir)
        bm25_rows = _load_hf_split(source, "bm25", split_name, ["query-id", "corpus-ids"], cache_dir)
        qrels: dict[str, dict[str, int]] = {}
        scores = qrels_rows["score"] if "score" in qrels_rows.column_names else [1] * len(qrels_rows)
        for qid, doc_ids, score in zip(qrels_rows["query-id"], qrels_rows["corpus-id"], scores):
            for doc_id in _as_id_list(doc_ids):
                qrels.setdefault(str(qid), {})[doc_id] = int(score)
        rankings = {str(qid): _as_id_list(ids) for qid, ids in zip(bm25_rows["query-id"], bm25_rows["corpus-ids"])}
    elif layout == "per-dataset":
        source = (dataset_id or NANOBEIR_PER_DATASET_ID).format(name=human)
        corpus = _corpus_from_rows(_load_hf_split(source, "corpus", "train", ["_id", "text"], cache_dir))
        query_rows = _load_hf_split(source, "queries", "train", ["_id", "text"], cache_dir)
        relevance = _load_hf_split(
            source, "relevance", "train", ["query-id", "positive-corpus-ids", "bm25-ranked-ids"], cache_dir
        )
        qrels = {
            str(qid): {doc_id: 1 for doc_id in _as_id_list(positives)}
            for qid, positives in zip(relevance["query-id"], relevance["positive-corpus-ids"])
        }
        rankings = {
            str(qid): _as_id_list(ids) for qid, ids in zip(relevance["query-id"], relevance["bm25-ranked-ids"])
        }
    else:
        raise DatasetError(f"unknown NanoBEIR layout {layout!r}; use 'collection' or 'per-dataset'")
    all_queries = {str(qid): text for qid, text in zip(query_rows["_id"], query_rows["text"])}
    missing = [qid for qid in rankings if qid not in all_queries]
    if missing:
        raise DatasetError(f"{split_name}: the BM25 lists name queries missing from the queries subset: {missing[:5]}")
    unjudged = [qid for qid in rankings if qid not in qrels]
    if unjudged:
        raise DatasetError(f"{split_name}: the BM25 lists name queries without qrels: {unjudged[:5]}")
    queries = {qid: all_queries[qid] for qid in rankings}
    qrels = {qid: qrels[qid] for qid in rankings}
    dataset = RetrievalDataset(name=split_name, corpus=corpus, queries=queries, qrels=qrels, rankings=rankings)
    dataset.validate()
    return dataset


def load_hf_beir(
    dataset_id: str,
    split: str = "test",
    qrels_id: str | None = None,
    qrels_subset: str | None = "default",
    name: str | None = None,
    cache_dir: str | None = None,
) -> RetrievalDataset:
    """Load a Hugging Face dataset in BEIR schema (or a local folder in the Hub's layout).

    ``corpus`` and ``queries`` subsets of ``dataset_id`` (``_id``, ``title``, ``text``); qrels (``query-id``,
    ``corpus-id``, ``score``) from split ``split`` of subset ``qrels_subset`` of ``qrels_id`` (default: the same
    dataset, as ``mteb/<name>``; for ``BeIR/<name>`` pass ``qrels_id="BeIR/<name>-qrels", qrels_subset=None``).
    """
    corpus = _corpus_from_rows(_load_hf_split(dataset_id, "corpus", None, ["_id", "text"], cache_dir))
    query_rows = _load_hf_split(dataset_id, "queries", None, ["_id", "text"], cache_dir)
    qrels_rows = _load_hf_split(qrels_id or dataset_id, qrels_subset, split, ["query-id", "corpus-id", "score"], cache_dir)
    qrels: dict[str, dict[str, int]] = {}
    for qid, doc_id, score in zip(qrels_rows["query-id"], qrels_rows["corpus-id"], qrels_rows["score"]):
        qrels.setdefault(str(qid), {})[str(doc_id)] = int(score)
    all_queries = {str(qid): text for qid, text in zip(query_rows["_id"], query_rows["text"])}
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    dataset = RetrievalDataset(name=name or dataset_id.rstrip("/").split("/")[-1], corpus=corpus, queries=queries, qrels=qrels)
    dataset.validate()
    return dataset
