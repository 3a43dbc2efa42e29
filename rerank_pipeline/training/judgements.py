"""Training judgements: the user's corpus plus (query, positive) judgements, and the dev split held out of them.

Judgements come from a BEIR qrels split or from a JSONL/CSV file with one (query, positive) a row.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from rerank_pipeline.datasets import DatasetError, RetrievalDataset, load_beir, load_corpus, read_jsonl

QUERY_ID_KEYS = ("query_id", "query-id", "qid")
QUERY_TEXT_KEYS = ("query", "question", "query_text")
POSITIVE_ID_KEYS = ("positive_id", "doc_id", "corpus-id", "corpus_id", "document_id")
POSITIVE_TEXT_KEYS = ("positive", "positive_text", "document", "passage")
GAIN_KEYS = ("score", "gain", "label", "relevance")


def _first(row: dict, keys: tuple[str, ...]):
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip() != "":
            return value
    return None


def _read_rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    return read_jsonl(path)


def load_judgement_file(judgements: str | Path, corpus: str | Path | dict, name: str | None = None) -> RetrievalDataset:
    """Build a training collection from a corpus and a JSONL/CSV file of (query, positive) rows.

    Each row names the query (``query``; optional ``query_id``) and its positive either by id
    (``positive_id``/``doc_id``/``corpus-id``) or by text (``positive``); an optional ``score``/``gain``
    (default 1) grades it. A positive given as text that is not in the corpus is added to it.
    """
    path = Path(judgements)
    if not path.is_file():
        raise DatasetError(f"judgements file not found: {path}")
    documents = dict(load_corpus(corpus) if not isinstance(corpus, dict) else corpus)
    text_to_id = {doc["text"]: doc_id for doc_id, doc in documents.items()}
    queries: dict[str, str] = {}
    query_ids_by_text: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row_number, row in enumerate(_read_rows(path), start=1):
        query_text = _first(row, QUERY_TEXT_KEYS)
        if query_text is None:
            raise DatasetError(f"{path}: row {row_number} has no query text (expected one of {QUERY_TEXT_KEYS})")
        query_text = str(query_text)
        query_id = _first(row, QUERY_ID_KEYS)
        query_id = str(query_id) if query_id is not None else query_ids_by_text.setdefault(query_text, f"q{len(query_ids_by_text) + 1}")
        queries[query_id] = query_text
        positive_id = _first(row, POSITIVE_ID_KEYS)
        positive_text = _first(row, POSITIVE_TEXT_KEYS)
        if positive_id is not None:
            positive_id = str(positive_id)
            if positive_id not in documents:
                raise DatasetError(f"{path}: row {row_number}: positive document {positive_id!r} is not in the corpus")
        elif positive_text is not None:
            positive_text = str(positive_text)
            positive_id = text_to_id.get(positive_text)
            if positive_id is None:
                positive_id = f"judged-positive-{len(documents) + 1}"
                documents[positive_id] = {"title": "", "text": positive_text}
                text_to_id[positive_text] = positive_id
        else:
            raise DatasetError(
                f"{path}: row {row_number} names no positive (expected an id in {POSITIVE_ID_KEYS} or a text in {POSITIVE_TEXT_KEYS})"
            )
        gain = _first(row, GAIN_KEYS)
        qrels.setdefault(query_id, {})[positive_id] = int(float(gain)) if gain is not None else 1
    dataset = RetrievalDataset(name=name or path.stem, corpus=documents, queries=queries, qrels=qrels)
    check_training_judgements(dataset)
    return dataset


def load_training_collection(
    beir_dir: str | Path | None = None,
    split: str = "train",
    judgements: str | Path | None = None,
    corpus: str | Path | None = None,
) -> RetrievalDataset:
    """Load the training collection from a BEIR folder split, or from ``judgements`` + ``corpus`` files.

    With ``beir_dir`` and ``judgements`` both given, the corpus comes from the BEIR folder.
    """
    if judgements is not None:
        if corpus is None and beir_dir is None:
            raise DatasetError("a judgements file needs a corpus: pass a corpus file or a BEIR folder")
        corpus_path = Path(corpus) if corpus is not None else Path(beir_dir) / "corpus.jsonl"
        return load_judgement_file(judgements, corpus_path)
    if beir_dir is None:
        raise DatasetError("no training data: pass a BEIR folder or a judgements file with a corpus")
    dataset = load_beir(beir_dir, split)
    check_training_judgements(dataset)
    return dataset


def check_training_judgements(dataset: RetrievalDataset) -> None:
    """Raise :class:`DatasetError` when no query has a positive or a judgement names an unknown id."""
    dataset.validate()
    if not dataset.judged_queries():
        raise DatasetError(f"{dataset.name}: no query has a positive judgement (gain > 0); nothing to train on")


def split_dev(
    query_ids: list[str], dev_fraction: float = 0.2, min_dev_queries: int = 5, seed: int = 42
) -> tuple[list[str], list[str]]:
    """Hold out a random ``dev_fraction`` of the judged queries (at least ``min_dev_queries``) for model selection.

    Returns ``(train_ids, dev_ids)``. Too few queries to keep ``min_dev_queries`` on both sides is an error.
    """
    if len(query_ids) < 2 * min_dev_queries:
        raise DatasetError(
            f"too few judged queries for a dev split: {len(query_ids)} (need at least {2 * min_dev_queries} "
            f"to hold out {min_dev_queries} for model selection and train on the rest)"
        )
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)
    dev_count = max(min_dev_queries, round(dev_fraction * len(shuffled)))
    dev_count = min(dev_count, len(shuffled) - min_dev_queries)
    return shuffled[dev_count:], shuffled[:dev_count]


def check_held_out(training: RetrievalDataset, held_out: RetrievalDataset, split: str) -> None:
    """Refuse a held-out split that shares a judged query with the training judgements, by id or by text (a
    judgements file without query ids numbers its queries q1, q2, ... itself).

    :raises ValueError: naming the split and a few shared query ids.
    """
    trained_texts = {" ".join(text.lower().split()) for text in training.judged_queries().values()}
    overlap = sorted(
        qid for qid, text in held_out.judged_queries().items()
        if qid in training.judged_queries() or " ".join(text.lower().split()) in trained_texts
    )
    if overlap:
        raise ValueError(f"--eval-split {split!r} shares {len(overlap)} queries with the training judgements, e.g. {overlap[:5]}")
