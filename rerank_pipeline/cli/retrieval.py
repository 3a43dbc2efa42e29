"""``rerank-pipeline index`` (build a first-stage index) and ``rerank-pipeline search`` (first stage -> rerank)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rerank_pipeline.cli import add_progress_flag
from rerank_pipeline.cli.serve import fusion_line
from rerank_pipeline.options import (
    FirstStageOptions,
    RankerOptions,
    add_first_stage_options,
    add_fusion_option,
    add_index_settings,
    add_ranker_options,
    add_result_options,
)

if TYPE_CHECKING:  # haystack is imported by the handlers, so building the parser stays fast
    from haystack import Document

    from rerank_pipeline.datasets import ReadReport

logger = logging.getLogger(__name__)

def read_documents(
    path: Path, on_bad_line: str = "stop", on_duplicate: str = "last", encoding: str = "utf-8"
) -> tuple[list[Document], ReadReport]:
    """:func:`stream_documents` read whole: one document an id (``last``: the last line's, at the first's place)."""
    documents, report = stream_documents(path, on_bad_line, on_duplicate, encoding)
    unique = list({document.id: document for document in documents}.values())
    if not unique:
        raise ValueError(f"no documents in {path} (the corpus is empty)")
    return unique, report


def stream_documents(
    path: Path, on_bad_line: str = "stop", on_duplicate: str = "last", encoding: str = "utf-8"
) -> tuple[Iterator[Document], ReadReport]:
    """Documents from a JSONL file: ``_id``/``id``, ``text``/``content``, optional ``title``; other keys go to meta.

    A ``meta`` object's keys become the document's meta (``{"meta": {"year": 1999}}`` gives ``meta["year"]``,
    so a filter on ``meta.year`` matches), next to ``title`` and the line's other keys; see
    :func:`~rerank_pipeline.datasets.line_meta` for a ``meta`` that is not an object or repeats a key.
    A malformed line (bad JSON, missing fields, bytes not in ``encoding``) raises ``ValueError`` naming file and
    line (``on_bad_line="stop"``) or is skipped (``"skip"``); a repeated id is resolved by ``on_duplicate``
    (``last``, ``first`` or ``error``). Returns the documents as they are read (``last``: a repeated id comes
    again, to replace the earlier one) and the :class:`~rerank_pipeline.datasets.ReadReport` counting what was
    skipped or merged.
    """
    from haystack import Document
    from rerank_pipeline.datasets import ReadReport, line_meta, read_jsonl_rows

    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    report = ReadReport(path, on_bad_line=on_bad_line, on_duplicate=on_duplicate)

    def rows():
        for line_number, row in read_jsonl_rows(path, encoding, report):
            doc_id = row.pop("_id", None) if "_id" in row else row.pop("id", None)
            text = row.pop("text", None) if "text" in row else row.pop("content", None)
            if doc_id is None or text is None:
                report.bad_line(line_number, "needs an '_id' (or 'id') and a 'text' (or 'content') field")
            elif not isinstance(text, str):
                report.bad_line(line_number, "'text' must be a string")
            else:
                meta, problem = line_meta(row)
                if problem:
                    report.bad_line(line_number, problem)
                else:
                    yield line_number, str(doc_id), Document(id=str(doc_id), content=text, meta=meta)

    return (document for _, document in report.unique_stream(rows())), report


def _corpus_path(args: argparse.Namespace) -> tuple[Path, str]:
    if args.beir_dir:
        folder = Path(args.beir_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"BEIR folder not found: {folder}")
        return folder / "corpus.jsonl", folder.resolve().name
    path = Path(args.jsonl)
    return path, path.stem


def run_index(args: argparse.Namespace) -> int:
    """Index a corpus into the chosen backend; the folder is swapped in only when indexing succeeded."""
    from rerank_pipeline.components.index_folder import check_index_dir
    from rerank_pipeline.first_stage import build_first_stage

    first_stage = FirstStageOptions.from_args(args)
    corpus_path, name = _corpus_path(args)
    index_dir = check_index_dir(args.index_dir or Path("indexes") / name)  # before any work
    documents, report = stream_documents(corpus_path, args.on_bad_line, args.on_duplicate, args.encoding)
    if args.rebuild or not (index_dir / "index.json").is_file():
        reopen_dir = None  # build from empty, in memory; the folder is written once, at the end
    else:
        reopen_dir = index_dir
    started = time.perf_counter()
    stage = build_first_stage(
        first_stage.kind, **{**first_stage.build_kwargs(), "index_dir": reopen_dir}
    )
    stage.index_dir = str(index_dir)  # index() saves there, swapping the folder in atomically
    count = stage.index(_not_empty(documents, corpus_path), total=count_lines(corpus_path))
    if report.summary():
        print(report.summary(), file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"indexed {count} documents from {corpus_path} into {index_dir} ({first_stage.kind}, {elapsed:.1f} s)")
    return 0


def _not_empty(documents: Iterator[Document], path: Path) -> Iterator[Document]:
    """``documents``, raising before the end when there were none (nothing is written then)."""
    empty = True
    for document in documents:
        empty = False
        yield document
    if empty:
        raise ValueError(f"no documents in {path} (the corpus is empty)")


def count_lines(path: Path) -> int:
    """Lines in a file (an upper bound of its documents, for a progress bar's ETA), read in blocks."""
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b""))


def _render_table(query: str, documents: list[Document], width: int) -> str:
    rows = [f"query: {query}", f"{'rank':>4}  {'score':>9}  {'id':<12}  text"]
    snippet_width = max(20, width - 33)
    for rank, doc in enumerate(documents, start=1):
        title = str(doc.meta.get("title") or "")  # a JSONL title may be a number
        text = " ".join((doc.content or "").split())
        if title and not text.lower().startswith(title.lower()):
            text = f"{title} | {text}"
        snippet = text if len(text) <= snippet_width else text[: snippet_width - 1] + "…"
        score = f"{doc.score:9.4f}" if doc.score is not None else f"{'-':>9}"
        rows.append(f"{rank:>4}  {score}  {doc.id[:12]:<12}  {snippet}")
    if not documents:
        rows.append("(no matching documents)")
    return "\n".join(rows)


def run_search(args: argparse.Namespace) -> int:
    """First stage from ``--index-dir`` -> optional cross-encoder -> top-k, as a table or JSON."""
    from rerank_pipeline.pipelines import build_pipeline, search

    if not args.model and not args.no_rerank:
        raise ValueError("pass --model (a cross-encoder folder or Hub id) or --no-rerank for the first stage only")
    model = None if args.no_rerank else args.model
    ranker = RankerOptions.from_args(args)
    if not model and ranker.flags_set():
        raise ValueError(f"{', '.join(ranker.flags_set())} set the reranker: pass --model, or drop them")
    pipeline = build_pipeline(
        args.index_dir,
        ranker_model=model,
        top_k=args.top_k,
        candidates=max(args.candidates, args.top_k),
        ranker_options=ranker.ranker_kwargs(),
        fusion=args.fusion,
    )
    try:
        documents = search(pipeline, args.query)
    except (OSError, RuntimeError) as error:  # model loading; keep the error to one line
        lines = str(error).splitlines() or [type(error).__name__]
        prefix = "cannot load a model: " if isinstance(error, OSError) else ""
        raise RuntimeError(prefix + lines[0]) from None
    documents = documents[: args.top_k]
    if args.json:
        results = [
            {"rank": rank, "id": doc.id, "score": doc.score, "title": doc.meta.get("title", ""), "content": doc.content}
            for rank, doc in enumerate(documents, start=1)
        ]
        fusion = {"fusion": fusion_line(model, args.fusion)} if model else {}
        print(json.dumps({"query": args.query, "reranked": not args.no_rerank, **fusion, "results": results}, ensure_ascii=False, indent=2))
    else:
        if model:  # on stderr, once the search succeeded: the table stays the output
            print(fusion_line(model, args.fusion), file=sys.stderr)
        print(_render_table(args.query, documents, shutil.get_terminal_size((120, 20)).columns))
    return 0


def register(subparsers) -> None:
    """Add ``index`` and ``search`` to the ``rerank-pipeline`` parser."""
    index = subparsers.add_parser("index", help="index a BEIR folder or a JSONL of documents into a first-stage backend")
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir-dir", help="BEIR folder (its corpus.jsonl is indexed)")
    source.add_argument("--jsonl", help="JSONL of documents: _id (or id), text (or content), optional title and meta")
    add_first_stage_options(
        index, help="first stage to build (bm25 is embedded, no server; faiss = dense)", deprecated_backend=True,
        embedding_help="sentence-transformers model (folder or Hub id) for dense/hybrid; with elasticsearch, "
                       "embeddings go into a dense_vector field and search fuses BM25 and kNN by RRF",
    )
    index.add_argument("--index-dir", help="index folder (default: ./indexes/<corpus name>)")
    add_index_settings(index)
    index.add_argument("--on-bad-line", choices=("stop", "skip"), default="stop", help="malformed JSONL line (or bytes not in --encoding): stop (default) or skip")
    index.add_argument("--on-duplicate", choices=("last", "first", "error"), default="last", help="an id seen again: keep the last line (default), the first, or stop (error); counted and reported")
    index.add_argument("--encoding", default="utf-8", help="text encoding of the corpus file (default utf-8; e.g. latin-1)")
    index.add_argument("--rebuild", action="store_true", help="start from an empty index instead of updating the existing one")
    add_progress_flag(index)
    index.set_defaults(func=run_index)

    search = subparsers.add_parser("search", help="first stage -> cross-encoder rerank -> top-k for one query")
    search.add_argument("query", help="the query text")
    search.add_argument("--index-dir", required=True, help="index folder written by `rerank-pipeline index`")
    search.add_argument("--model", help="cross-encoder (folder or Hub id) that reranks the candidates")
    search.add_argument("--no-rerank", action="store_true", help="show the first-stage ranking only")
    add_result_options(search)
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_ranker_options(search)
    add_fusion_option(search)
    add_progress_flag(search)
    search.set_defaults(func=run_search)
