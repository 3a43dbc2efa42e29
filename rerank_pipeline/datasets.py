"""Retrieval collections in one shape: corpus, queries, graded qrels.

Everything downstream (first stage, reranker, metrics, training) reads a
:class:`RetrievalDataset`; loaders turn on-disk or Hub formats into it. A BEIR folder's corpus is a
:class:`BeirCorpus`, read from its file when asked (memory holds each document's id and line offset, never the
texts); the Hub loaders' corpora are dicts.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, ItemsView, Mapping, ValuesView
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from haystack import Document

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DatasetError(ValueError):
    """A collection on disk or on the Hub is missing a part or is inconsistent."""


@dataclass
class RetrievalDataset:
    """A test collection.

    ``corpus`` maps a document id to ``{"title": ..., "text": ...}`` (a dict, or a :class:`BeirCorpus` that reads
    each entry from its file when asked); ``queries`` maps a query id to its text; ``qrels`` maps a query id to
    ``{doc_id: gain}`` (gain > 0 is relevant). ``rankings`` optionally holds a published first-stage
    ranking per query (doc ids, best first), as NanoBEIR's BM25 lists.
    """

    name: str
    corpus: Mapping[str, dict[str, str]]
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

    def documents(self) -> Iterator[Document]:
        """The corpus as Haystack documents, one at a time: ``id`` is the corpus id, ``meta['title']`` the title.

        A :class:`BeirCorpus` is read from its file as this goes, so the caller decides what is held (an embedded
        BM25 first stage streams them into its folder; ``list(...)`` holds them all)."""
        for doc_id, doc in self.corpus.items():
            yield Document(id=doc_id, content=doc["text"], meta={"title": doc.get("title", "")})

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


ON_BAD_LINE = ("stop", "skip")
"""A malformed line (bad JSON, missing fields, bytes that are not in the file's encoding): stop with an error naming
file and line, or skip it and count it."""

ON_DUPLICATE = ("last", "first", "error")
"""An id seen again in the same file: keep the last line (Haystack's ``DuplicatePolicy.OVERWRITE``), the first
(``SKIP``), or stop with an error (``FAIL``). Duplicates are always counted and reported."""


@dataclass
class ReadReport:
    """What reading one file skipped or merged, so that nothing changes silently (see :meth:`summary`)."""

    path: Path
    on_bad_line: str = "stop"
    on_duplicate: str = "last"
    lines: int = 0
    skipped: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_bad_line not in ON_BAD_LINE:
            raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {self.on_bad_line!r}")
        if self.on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"on_duplicate must be one of {ON_DUPLICATE}, got {self.on_duplicate!r}")

    def bad_line(self, line_number: int, problem: str) -> None:
        """Skip and count line ``line_number`` (``on_bad_line="skip"``), else raise :class:`DatasetError`."""
        if self.on_bad_line == "skip":
            self.skipped.append(line_number)
            return
        raise DatasetError(f"{self.path}:{line_number}: {problem} (use --on-bad-line skip to skip such lines)")

    def keep_unique(self, rows: Iterable[tuple[int, str, T]]) -> dict[str, T]:
        """``{id: value}`` from ``(line number, id, value)`` rows, applying ``on_duplicate`` to repeated ids."""
        return dict(self.unique_stream(rows))

    def unique_stream(self, rows: Iterable[tuple[int, str, T]]) -> Iterator[tuple[str, T]]:
        """``(id, value)`` from ``(line number, id, value)`` rows as they come, applying ``on_duplicate``: a repeated
        id raises (``error``), is dropped (``first``) or comes again, to replace the earlier one (``last``)."""
        first_line: dict[str, int] = {}
        for line_number, key, value in rows:
            if key in first_line:
                if self.on_duplicate == "error":
                    raise DatasetError(
                        f"{self.path}:{line_number}: id {key!r} already appeared on line {first_line[key]} "
                        "(use --on-duplicate first|last to keep one)"
                    )
                self.duplicates.append(key)
                if self.on_duplicate == "first":
                    continue
            else:
                first_line[key] = line_number
            yield key, value

    def summary(self) -> str | None:
        """One line such as ``corpus.jsonl: 3 lines, 2 unique ids; 1 duplicate id, last kept: 'd1'``, or None."""
        parts = []
        if self.skipped:
            shown = ", ".join(map(str, self.skipped[:10])) + (" ..." if len(self.skipped) > 10 else "")
            parts.append(f"skipped {len(self.skipped)} malformed line(s): {shown}")
        if self.duplicates:
            unique = self.lines - len(self.skipped) - len(self.duplicates)
            repeated = list(dict.fromkeys(self.duplicates))
            shown = ", ".join(map(repr, repeated[:10])) + (" ..." if len(repeated) > 10 else "")
            parts.append(
                f"{self.lines} lines, {unique} unique ids; {len(self.duplicates)} duplicate id"
                f"{'s' if len(self.duplicates) > 1 else ''}, {self.on_duplicate} kept: {shown}"
            )
        return f"{self.path}: " + "; ".join(parts) if parts else None

    def log(self) -> None:
        """Report :meth:`summary` as a warning (nothing when nothing was skipped or merged)."""
        summary = self.summary()
        if summary:
            logger.warning(summary)


def read_text_lines(
    path: str | Path, encoding: str = "utf-8", report: ReadReport | None = None
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line; a line not decodable in ``encoding`` goes to ``report``."""
    for line_number, _, line in _text_lines(Path(path), encoding, report or ReadReport(Path(path))):
        yield line_number, line


def _text_lines(path: Path, encoding: str, report: ReadReport) -> Iterator[tuple[int, int, str]]:
    """:func:`read_text_lines` with each line's byte offset in the file: ``(line number, offset, text)``."""
    end = 0
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            start, end = end, end + len(raw)
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as error:
                report.bad_line(
                    line_number,
                    f"not {encoding} text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line; "
                    "pass --encoding, e.g. latin-1, if the file uses another encoding)",
                )
                continue
            except LookupError:
                raise DatasetError(f"unknown encoding {encoding!r}") from None
            if line.strip():
                report.lines += 1
                yield line_number, start, line


def read_jsonl_rows(
    path: str | Path, encoding: str = "utf-8", report: ReadReport | None = None
) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of every JSON-object line; bad lines go to ``report`` (stop or skip)."""
    for line_number, _, row in _jsonl_rows(Path(path), encoding, report or ReadReport(Path(path))):
        yield line_number, row


def _jsonl_rows(path: Path, encoding: str, report: ReadReport) -> Iterator[tuple[int, int, dict]]:
    """:func:`read_jsonl_rows` with each line's byte offset: ``(line number, offset, object)``."""
    for line_number, offset, line in _text_lines(path, encoding, report):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            report.bad_line(line_number, f"not valid JSON ({error.msg})")
            continue
        if not isinstance(row, dict):
            report.bad_line(line_number, "not a JSON object")
            continue
        yield line_number, offset, row


def read_jsonl(path: Path, encoding: str = "utf-8", on_bad_line: str = "stop") -> list[dict]:
    """Read a JSON-lines file; a malformed line raises :class:`DatasetError` naming file and line (or is skipped)."""
    report = ReadReport(Path(path), on_bad_line=on_bad_line)
    rows = [row for _, row in read_jsonl_rows(path, encoding, report)]
    report.log()
    return rows


def line_meta(row: dict) -> tuple[dict, str | None]:
    """The meta of a corpus line whose id and text were taken out: ``title``, the other keys, a ``meta`` object's keys.

    ``{"title": "T", "lang": "en", "meta": {"year": 1999}}`` gives ``{"title": "T", "lang": "en", "year": 1999}``
    (``title`` is ``""`` when absent). A ``meta`` object is the document's meta, not a key of it, so a filter on
    ``meta.year`` matches. Returns ``(meta, None)``, or ``({}, problem)`` for a line to refuse:

    - ``meta`` is not a JSON object (a list, a string, a number; ``null`` counts as no ``meta``);
    - a key given both at the top level and in ``meta`` with different values (``title`` too: a non-empty
      top-level ``title`` and a different, non-empty ``meta.title``). The same value twice is accepted; a
      top-level ``title`` that is absent or empty takes ``meta.title``.
    """
    row = dict(row)
    nested = row.pop("meta", None)
    if nested is not None and not isinstance(nested, dict):
        return {}, f"'meta' must be a JSON object, got {_json_kind(nested)} (its keys become the document's meta)"
    meta = {"title": row.pop("title", None) or "", **row}
    for key, value in (nested or {}).items():
        if key == "title" and (not value or not meta["title"]):
            meta["title"] = meta["title"] or value or ""
        elif key in meta and meta[key] != value:
            return {}, (f"{key!r} is given twice with different values: {meta[key]!r} at the top level and "
                        f"{value!r} in 'meta' (keep one)")
        else:
            meta[key] = value
    return meta, None


def _json_kind(value) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _id_and_text_rows(path: Path, encoding: str, report: ReadReport) -> Iterator[tuple[int, str, dict]]:
    """``(line, id, row)`` of a BEIR corpus or queries file; a line without ``_id`` and ``text`` is a bad line."""
    for line_number, _, doc_id, row in _id_and_text_rows_at(path, encoding, report):
        yield line_number, doc_id, row


def _id_and_text_rows_at(path: Path, encoding: str, report: ReadReport) -> Iterator[tuple[int, int, str, dict]]:
    """:func:`_id_and_text_rows` with each line's byte offset: ``(line, offset, id, row)``."""
    for line_number, offset, row in _jsonl_rows(path, encoding, report):
        if "_id" not in row or "text" not in row:
            report.bad_line(line_number, f"every line needs '_id' and 'text' (got keys {sorted(row)})")
            continue
        yield line_number, offset, str(row["_id"]), row


def _corpus_entry(row: dict) -> dict[str, str]:
    """A corpus line's ``{"title", "text"}`` (a missing or null title or text is ``""``)."""
    return {"title": row.get("title") or "", "text": row["text"] or ""}


def load_corpus(
    path: str | Path, encoding: str = "utf-8", on_bad_line: str = "stop", on_duplicate: str = "last"
) -> dict[str, dict[str, str]]:
    """Load a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) into ``{id: {title, text}}``, all in memory.

    Skipped lines and repeated ids (resolved by ``on_duplicate``, see :data:`ON_DUPLICATE`) are logged as a warning.
    :class:`BeirCorpus` reads the same entries without holding them.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"corpus file not found: {path}")
    report = ReadReport(path, on_bad_line=on_bad_line, on_duplicate=on_duplicate)
    corpus = report.keep_unique(
        (line_number, doc_id, _corpus_entry(row))
        for line_number, doc_id, row in _id_and_text_rows(path, encoding, report)
    )
    report.log()
    if not corpus:
        raise DatasetError(f"corpus is empty: {path}")
    return corpus


LINE_READ_BYTES = 4096
"""Bytes read at a time for one corpus line (more follow when the line is longer)."""


class BeirCorpus(Mapping):
    """A BEIR ``corpus.jsonl`` as a read-only mapping ``{id: {"title", "text"}}`` whose entries are read from the
    file when asked: memory holds each kept line's byte offset, never a text.

    Opening reads the file once, with :func:`load_corpus`'s policies (``on_bad_line``, ``on_duplicate``; what was
    skipped or merged is logged and kept in :attr:`report`), so it equals ``load_corpus(path, ...)`` entry for
    entry and in the same order (``last``: the last line's entry at the first line's place). Then
    ``corpus[doc_id]`` reads that one line (``os.pread`` at its offset: no shared file position, so threads and
    forked processes may read at once), and ``items()``/``values()`` read the kept lines through one buffered
    handle, in order. A line that no longer holds its id (the file was changed since) raises
    :class:`DatasetError`.
    """

    def __init__(
        self, path: str | Path, encoding: str = "utf-8", on_bad_line: str = "stop", on_duplicate: str = "last"
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"corpus file not found: {self.path}")
        self.encoding = encoding
        self.report = ReadReport(self.path, on_bad_line=on_bad_line, on_duplicate=on_duplicate)
        self._offsets: dict[str, int] = self.report.keep_unique(
            (line_number, doc_id, offset)
            for line_number, offset, doc_id, _ in _id_and_text_rows_at(self.path, encoding, self.report)
        )
        self.report.log()
        if not self._offsets:
            raise DatasetError(f"corpus is empty: {self.path}")

    def __len__(self) -> int:
        return len(self._offsets)

    def __iter__(self) -> Iterator[str]:
        return iter(self._offsets)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._offsets

    def __getitem__(self, doc_id: str) -> dict[str, str]:
        offset = self._offsets[doc_id]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = b""
            while True:
                block = os.pread(fd, LINE_READ_BYTES, offset + len(data))
                data += block
                end = data.find(b"\n")
                if end >= 0 or len(block) < LINE_READ_BYTES:
                    break
        finally:
            os.close(fd)
        return self._entry(doc_id, data[: end + 1] if end >= 0 else data)

    def __repr__(self) -> str:
        return f"BeirCorpus({str(self.path)!r}, {len(self)} documents)"

    def entries(self, doc_ids: Iterable[str]) -> Iterator[tuple[str, dict[str, str]]]:
        """``(id, entry)`` of each of ``doc_ids``, in that order, read through one buffered handle (fastest in
        file order; an unknown id raises ``KeyError``)."""
        with open(self.path, "rb", buffering=1 << 20) as handle:
            for doc_id in doc_ids:
                handle.seek(self._offsets[doc_id])  # within the buffer: no system call
                yield doc_id, self._entry(doc_id, handle.readline())

    def items(self) -> ItemsView:
        return _StreamedItems(self)

    def values(self) -> ValuesView:
        return _StreamedValues(self)

    def _entry(self, doc_id: str, raw: bytes) -> dict[str, str]:
        try:
            row = json.loads(raw.decode(self.encoding))
            if str(row["_id"]) == doc_id and "text" in row:
                return _corpus_entry(row)
        except (ValueError, TypeError, KeyError):
            pass
        raise DatasetError(f"{self.path}: the line of document {doc_id!r} changed since the file was read; "
                           "load the collection again")


class _StreamedItems(ItemsView):
    def __iter__(self):
        return self._mapping.entries(self._mapping)


class _StreamedValues(ValuesView):
    def __iter__(self):
        return (entry for _, entry in self._mapping.entries(self._mapping))


def corpus_entries(
    corpus: Mapping[str, dict[str, str]], doc_ids: Iterable[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """``(id, entry)`` of each of ``doc_ids`` from any corpus mapping (one file handle for a :class:`BeirCorpus`)."""
    if isinstance(corpus, BeirCorpus):
        return corpus.entries(doc_ids)
    return ((doc_id, corpus[doc_id]) for doc_id in doc_ids)


def load_qrels(path: str | Path, encoding: str = "utf-8", on_bad_line: str = "stop") -> dict[str, dict[str, int]]:
    """Load a BEIR qrels TSV (header ``query-id corpus-id score``) into ``{qid: {doc_id: gain}}``."""
    path = Path(path)
    report = ReadReport(path, on_bad_line=on_bad_line)
    qrels: dict[str, dict[str, int]] = {}
    lines = read_text_lines(path, encoding, report)
    for line_number, line in lines:
        row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
        if line_number == 1 and row and row[0] == "query-id":
            continue
        if len(row) < 3:
            report.bad_line(line_number, f"expected 'query-id corpus-id score', got {row}")
            continue
        try:
            gain = int(float(row[2]))
        except ValueError:
            report.bad_line(line_number, f"score {row[2]!r} is not a number (a header row must start with 'query-id')")
            continue
        qrels.setdefault(row[0], {})[row[1]] = gain
    report.log()
    if not report.lines:
        raise DatasetError(f"qrels file is empty: {path}")
    return qrels


def load_beir(
    path: str | Path,
    split: str = "test",
    name: str | None = None,
    encoding: str = "utf-8",
    on_bad_line: str = "stop",
    on_duplicate: str = "last",
) -> RetrievalDataset:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    The corpus is a :class:`BeirCorpus`: read once here (bad lines and duplicates are found now), then read
    again from the file for the documents asked for; queries and qrels are held. Only queries judged in the split are kept, so a split's queries never leak into another split. ``encoding``,
    ``on_bad_line`` (:data:`ON_BAD_LINE`) and ``on_duplicate`` (:data:`ON_DUPLICATE`, corpus and query ids) apply
    to every file; what was skipped or merged is logged as a warning.

    :raises DatasetError: If the folder, ``queries.jsonl`` or ``qrels/<split>.tsv`` is missing (the message lists the
        splits there are), or a line is bad (``FILE:LINE: ...``) and ``on_bad_line`` is ``"stop"``, or an id repeats
        and ``on_duplicate`` is ``"error"``.
    :raises ValueError: If ``on_bad_line`` or ``on_duplicate`` is not one of its choices.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"BEIR folder not found: {root}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DatasetError(f"split {split!r} not found in {root} (qrels/{split}.tsv missing; available: {available})")
    corpus = BeirCorpus(root / "corpus.jsonl", encoding, on_bad_line, on_duplicate)
    queries_path = root / "queries.jsonl"
    if not queries_path.is_file():
        raise DatasetError(f"queries file not found: {queries_path}")
    report = ReadReport(queries_path, on_bad_line=on_bad_line, on_duplicate=on_duplicate)
    all_queries = report.keep_unique(
        (line_number, qid, row["text"]) for line_number, qid, row in _id_and_text_rows(queries_path, encoding, report)
    )
    report.log()
    qrels = load_qrels(qrels_path, encoding, on_bad_line)
    if report.skipped:  # a skipped query line takes its judgements with it, counted
        orphaned = [qid for qid in qrels if qid not in all_queries]
        if orphaned:
            logger.warning(
                "%s: dropped the judgements of %d skipped queries: %s", qrels_path, len(orphaned), orphaned[:10]
            )
            qrels = {qid: rels for qid, rels in qrels.items() if qid in all_queries}
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
