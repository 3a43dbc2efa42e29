"""Labelled training examples: judged positives, mined negatives, self-supervised pseudo-query pairs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rerank_pipeline.training.self_supervised import PseudoQuery


@dataclass
class TrainingPairs:
    """Parallel lists of (query, document, label) with the query each row came from, and counts."""

    queries: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    judged_pairs: int = 0
    self_supervised_pairs: int = 0

    def add(self, group: str, query: str, document: str, label: float) -> None:
        self.groups.append(group)
        self.queries.append(query)
        self.documents.append(document)
        self.labels.append(float(label))

    @property
    def positives(self) -> int:
        return sum(1 for label in self.labels if label > 0)

    @property
    def negatives(self) -> int:
        return len(self.labels) - self.positives

    def __len__(self) -> int:
        return len(self.labels)

    def pairwise_dataset(self):
        """A ``datasets.Dataset`` with columns query, document, label (for BCE)."""
        from datasets import Dataset

        return Dataset.from_dict({"query": self.queries, "document": self.documents, "label": self.labels})

    def listwise_dataset(self):
        """A ``datasets.Dataset`` with one row a query: query, docs, labels (for LambdaLoss)."""
        from datasets import Dataset

        grouped: dict[str, dict] = {}
        for group, query, document, label in zip(self.groups, self.queries, self.documents, self.labels):
            row = grouped.setdefault(group, {"query": query, "docs": [], "labels": []})
            row["docs"].append(document)
            row["labels"].append(label)
        rows = list(grouped.values())
        return Dataset.from_dict({key: [row[key] for row in rows] for key in ("query", "docs", "labels")})


def build_training_pairs(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    negatives: Mapping[str, Sequence[str]],
    document_text: Callable[[str], str],
    pseudo_queries: Sequence[PseudoQuery] = (),
    pseudo_negatives: Mapping[str, Sequence[str]] | None = None,
    graded_labels: bool = True,
) -> TrainingPairs:
    """Pairs for the queries in ``negatives``: each positive (label ``gain / max gain`` when ``graded_labels``,
    else 1) and each mined negative (label 0); then each pseudo-query with its body (1) and its mined negatives (0).

    ``pseudo_negatives`` is keyed by the pseudo-query's ``doc_id``.
    """
    pairs = TrainingPairs()
    for query_id, negative_ids in negatives.items():
        judged = {doc_id: gain for doc_id, gain in qrels.get(query_id, {}).items() if gain > 0}
        if not judged:
            continue
        top_gain = max(judged.values())
        for doc_id, gain in judged.items():
            pairs.add(query_id, queries[query_id], document_text(doc_id), gain / top_gain if graded_labels else 1.0)
        for doc_id in negative_ids:
            pairs.add(query_id, queries[query_id], document_text(doc_id), 0.0)
    pairs.judged_pairs = len(pairs)
    pseudo_negatives = pseudo_negatives or {}
    for pseudo in pseudo_queries:
        group = f"pseudo:{pseudo.doc_id}"
        pairs.add(group, pseudo.query, pseudo.body, 1.0)
        for doc_id in pseudo_negatives.get(pseudo.doc_id, ()):
            pairs.add(group, pseudo.query, document_text(doc_id), 0.0)
    pairs.self_supervised_pairs = len(pairs) - pairs.judged_pairs
    return pairs
