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
        if header[0] != "query-id":  # headerless file: the first row is data
            reader = iter([header, *reader])
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise DatasetError(f"{path}:{line_number}: expected 'query-id corpus-id score', got {row}")
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
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
    all_queries = {str(row["_id"]): row["text"] for row in read_jsonl(queries_path)}
    qrels = load_qrels(qrels_path)
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    dataset = RetrievalDataset(name=name or root.name, corpus=corpus, queries=queries, qrels=qrels)
    dataset.validate()
    return dataset
