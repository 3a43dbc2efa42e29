"""The embedded default at its users' scale: rerank-pipeline's embedded BM25 vs bm25s alone on N documents.

The corpus is real text recombined: Cranfield's texts are split into sentences, and document ``i`` is a seeded
random choice of 5 to 8 of them (texts of ~820 bytes on average), with the id ``doc{i}`` and
``"meta": {"year": 1950 + i % 60}``. It is written line by line as JSONL into ``--work-dir`` (default
``/tmp/rerank-pipeline-scale-N``), so building it never holds the texts. Both engines see the same analysis
(lowercase, ``(?u)\\b\\w\\w+\\b``, bm25s's English stop words, Snowball English via PyStemmer; Lucene BM25, k1 0.9,
b 0.4):

- **ours**: ``rerank-pipeline index --jsonl`` builds the folder; ``EmbeddedBM25DocumentStore(index_dir=...)``
  opens it, and its ``bm25_retrieval`` / ``bm25_retrieval_batch`` search (our ``Analyzer`` on the text);
- **bm25s** (the anchor): a script on bm25s alone, with bm25s's own ``Tokenizer`` configured identically
  (``splitter``, ``stopwords="en"``, ``Stemmer("english")``) fed by a generator over the JSONL, so it streams where
  bm25s allows (the token ids of every document are held, as ``BM25.index`` needs them). It saves ``BM25.save``
  plus the ids and years as ``.npy`` (what it needs to name hits and to filter), and serves with ``BM25.load``
  (``mmap=True`` and without) and ``retrieve(weight_mask=years == 1999)`` for the filter. That both index the same
  terms is checked: the two saved vocabularies must be equal.

Each build and each serving session runs in its own child process, so a peak RSS is that child's alone
(``os.wait4``'s ``ru_maxrss``; ``VmRSS``/``VmHWM`` from ``/proc`` inside it); "imports only" is what a process holds
before any document. Index time is the child's wall time (interpreter start and imports included). Serving: open,
1,000 queries in one batch, 200 one at a time (p50), 20 with the ``meta.year == 1999`` filter (1 document in 60)
and the same 20 without, RSS, then one document written and one search (ours: ``write_documents`` on the opened
folder, journaled; bm25s alone has no add, so: a rebuild from the corpus). The write goes to a hard-linked copy
of our folder, so the built index stays as it was for ``--skip-build``. Ratios are ours / bm25s (without mmap)
measured in the same run. ``--dense`` adds ``FAISSDocumentStore`` (batches of 10k written, then ``save``) vs raw
faiss (``IndexFlatIP``) on random float32 vectors of dimension 384 (no embedding model). Printed with the CPU
flags and ``uptime`` before and after. A child that fails (e.g. out of memory at 10M) is reported, not fatal.

Disk: ~3 GB of work dir per million documents, ~7.5 GB with ``--dense`` (the N = 50,000 folders, times 20).

    python benchmarks/scale.py --documents 50000 --dense              # under a minute on 2 quiet cores
    python benchmarks/scale.py --documents 1000000 --keep --work-dir /scratch/scale
    python benchmarks/scale.py --documents 1000000 --skip-build --work-dir /scratch/scale   # serve only, again
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rerank_pipeline.hardware import cpu_description  # standard library only: nothing measured is loaded early

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEIR = REPO.parent / "shared" / "datasets" / "cranfield"

# The corpus.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_WORDS = 4  # shorter "sentences" (headings, formula debris) are dropped
MIN_SENTENCES, MAX_SENTENCES = 5, 8
GROW_BELOW_BYTES = 700  # a sentence is added while the text is shorter: texts average ~820 bytes (median ~800)
CORPUS_FILE, CORPUS_INFO = "corpus.jsonl", "corpus.json"

# The analysis and scoring both engines use.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
K1, B = 0.9, 0.4
TOP_K = 10
FILTER_YEAR = 1999  # 1 document in 60
FILTER = {"field": "meta.year", "operator": "==", "value": FILTER_YEAR}
ADDED_ID = "scale-added-document"

# Dense side.
DENSE_DIM = 384
DENSE_BATCH = 10_000


# ------------------------------------------------------------------------------------------------ the corpus


def source_sentences(beir_dir: str | Path) -> list[str]:
    """The distinct sentences (4 words or more, whitespace collapsed) of a BEIR corpus's texts, in file order."""
    sentences: dict[str, None] = {}
    with open(Path(beir_dir) / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                for sentence in SENTENCE_END.split(json.loads(line).get("text") or ""):
                    sentence = " ".join(sentence.split())
                    if len(sentence.split()) >= MIN_WORDS:
                        sentences.setdefault(sentence, None)
    if not sentences:
        raise ValueError(f"no sentences in {Path(beir_dir) / 'corpus.jsonl'}")
    return list(sentences)


def corpus_lines(count: int, sentences: list[str], seed: int = 0) -> Iterator[str]:
    """JSONL lines of ``count`` documents, one at a time: 5 sentences, then more (up to 8) while under 700 bytes.

    Deterministic for a given ``sentences`` and ``seed`` (``random.Random``, whose ``choice`` is stable across
    Python versions).
    """
    rng = random.Random(seed)
    for i in range(count):
        chosen = [rng.choice(sentences) for _ in range(MIN_SENTENCES)]
        size = sum(len(s.encode("utf-8")) + 1 for s in chosen)
        while size < GROW_BELOW_BYTES and len(chosen) < MAX_SENTENCES:
            chosen.append(rng.choice(sentences))
            size += len(chosen[-1].encode("utf-8")) + 1
        row = {"_id": f"doc{i}", "title": "", "text": " ".join(chosen), "meta": {"year": 1950 + i % 60}}
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_corpus(path: str | Path, count: int, sentences: list[str], seed: int = 0) -> dict:
    """Write the corpus line by line, atomically (a temporary file beside it, then renamed); returns its size and
    sha256."""
    path = Path(path)
    from rerank_pipeline.atomic import atomic_write  # standard library only: nothing measured is loaded early

    digest, size = hashlib.sha256(), 0
    with atomic_write(path) as handle:
        for line in corpus_lines(count, sentences, seed):
            data = line.encode("utf-8")
            digest.update(data)
            size += len(data)
            handle.write(line)
    return {"documents": count, "seed": seed, "bytes": size, "sha256": digest.hexdigest()}


def read_queries(beir_dir: str | Path, count: int) -> list[str]:
    """The collection's queries (every split), cycled to ``count``."""
    with open(Path(beir_dir) / "queries.jsonl", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    return [texts[i % len(texts)] for i in range(count)]


# ------------------------------------------------------------------------------------------------ child processes
# Each runs as ``python benchmarks/scale.py --child NAME --child-args FILE --child-result FILE``: its arguments and
# its result are JSON files (the queries would not fit a command line's argument limit of 128 KiB).


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000 if seconds else float("nan")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _bm25s_tokenizer():
    """bm25s's own tokenizer, configured as our ``Analyzer`` (the same stop words, pattern and stemmer)."""
    import Stemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(lower=True, splitter=TOKEN_PATTERN, stopwords="en", stemmer=Stemmer.Stemmer("english"))


def _bm25s_rows(corpus: Path, ids: list, years: list) -> Iterator[str]:
    """The indexed text of every corpus line (title, then text, as ``document_text``), streamed."""
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                ids.append(row["_id"])
                years.append((row.get("meta") or {}).get("year", 0))
                title = row.get("title") or ""
                yield f"{title} {row['text']}" if title else row["text"]


def _bm25s_index(texts: Iterator[str]):
    import bm25s
    from bm25s.tokenization import Tokenized

    tokenizer = _bm25s_tokenizer()
    token_ids = list(tokenizer.streaming_tokenize(texts))
    engine = bm25s.BM25(k1=K1, b=B, method="lucene")
    engine.index(Tokenized(ids=token_ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
    return engine


def child_imports(kind: str) -> dict:
    """What a process holds before any document: the imports a serving process of each engine needs."""
    start = time.perf_counter()
    if kind == "ours":
        import rerank_pipeline.components.bm25  # noqa: F401 - haystack (which imports torch when installed), bm25s
    else:
        import bm25s  # noqa: F401
        import numpy  # noqa: F401
        import Stemmer  # noqa: F401
    return {"import_s": time.perf_counter() - start, "rss_mb": _status_mb("VmRSS")}


def child_bm25s_build(corpus: str, folder: str) -> dict:
    """The anchor's indexing: bm25s alone, streaming the JSONL."""
    import numpy as np

    folder = Path(folder)
    ids: list[str] = []
    years: list[int] = []
    engine = _bm25s_index(_bm25s_rows(Path(corpus), ids, years))
    engine.save(str(folder / "bm25s"), show_progress=False)
    np.save(folder / "ids.npy", np.array(ids))
    np.save(folder / "years.npy", np.array(years, dtype=np.int16))
    return {"documents": len(ids)}


def _added_document_text(corpus: Path) -> str:
    with open(corpus, encoding="utf-8") as handle:
        return "added at serving time: " + json.loads(handle.readline())["text"]


def child_bm25s_serve(folder: str, corpus: str, queries: list[str], single: int, filtered: int, mmap: bool,
                      rebuild: bool) -> dict:
    """The anchor serving: open (mmap or not), batch and single queries, a filtered query, RSS; optionally the
    add-one-document cost, which for bm25s alone is a rebuild of the whole index."""
    import bm25s
    import numpy as np

    folder = Path(folder)
    start = time.perf_counter()
    engine = bm25s.BM25.load(str(folder / "bm25s"), mmap=mmap, show_progress=False)
    ids = np.load(folder / "ids.npy", mmap_mode="r" if mmap else None)
    years = np.load(folder / "years.npy", mmap_mode="r" if mmap else None)
    result = {"open_s": time.perf_counter() - start, "rss_open_mb": _status_mb("VmRSS")}
    tokenizer = _bm25s_tokenizer()  # queries: a fresh tokenizer; hits map to the index's vocabulary by stem

    def search(texts: list[str], mask=None) -> list[list[str]]:
        tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="string", show_progress=False)
        rows, scores = engine.retrieve(tokens, k=min(TOP_K, len(ids)), show_progress=False, weight_mask=mask)
        return [[str(ids[r]) for r, s in zip(row, score) if s > 0]
                for row, score in zip(rows.tolist(), scores.tolist())]

    search(queries[:1])  # warm
    top, result["batch_s"] = _timed(search, queries)
    result["batch_qps"] = len(queries) / result["batch_s"]
    result["top10"] = top
    latencies = [_timed(search, [q])[1] for q in queries[:single]]
    result["single_p50_ms"] = _p50_ms(latencies)
    result["unfiltered_p50_ms"] = _p50_ms(latencies[:filtered])
    result["filtered_p50_ms"] = _p50_ms(
        [_timed(lambda q: search([q], (np.asarray(years) == FILTER_YEAR).astype(np.float32)), q)[1]
         for q in queries[:filtered]])
    result["rss_serving_mb"], result["hwm_serving_mb"] = _status_mb("VmRSS"), _status_mb("VmHWM")
    if rebuild:  # bm25s has no add: the whole corpus plus the new document is indexed again
        added = _added_document_text(Path(corpus))
        del engine
        start = time.perf_counter()
        new_ids: list[str] = []

        def texts():
            yield from _bm25s_rows(Path(corpus), new_ids, [])
            new_ids.append(ADDED_ID)
            yield added

        engine = _bm25s_index(texts())
        ids = np.array(new_ids)
        result["add_s"] = time.perf_counter() - start
        hits, result["search_after_add_s"] = _timed(search, [added])
        result["added_found"] = ADDED_ID in hits[0]
    return result


def child_ours_serve(folder: str, corpus: str, queries: list[str], single: int, filtered: int) -> dict:
    """Ours serving: ``EmbeddedBM25DocumentStore(index_dir=...)``, its retrieval methods, then one write."""
    from haystack import Document

    from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore

    store, open_s = _timed(EmbeddedBM25DocumentStore, index_dir=folder)
    result = {"open_s": open_s, "rss_open_mb": _status_mb("VmRSS"), "documents": store.count_documents()}
    store.bm25_retrieval(queries[0], top_k=TOP_K)  # warm
    found, result["batch_s"] = _timed(store.bm25_retrieval_batch, queries, top_k=TOP_K)
    result["batch_qps"] = len(queries) / result["batch_s"]
    result["top10"] = [[doc.id for doc in docs] for docs in found]
    latencies = [_timed(store.bm25_retrieval, q, top_k=TOP_K)[1] for q in queries[:single]]
    result["single_p50_ms"] = _p50_ms(latencies)
    result["unfiltered_p50_ms"] = _p50_ms(latencies[:filtered])
    filtered_hits = []
    seconds = []
    for query in queries[:filtered]:
        docs, elapsed = _timed(store.bm25_retrieval, query, top_k=TOP_K, filters=FILTER)
        filtered_hits.append(docs)
        seconds.append(elapsed)
    result["filtered_p50_ms"] = _p50_ms(seconds)
    result["filter_correct"] = all(doc.meta.get("year") == FILTER_YEAR for docs in filtered_hits for doc in docs)
    result["rss_serving_mb"], result["hwm_serving_mb"] = _status_mb("VmRSS"), _status_mb("VmHWM")
    added = _added_document_text(Path(corpus))
    _, result["add_s"] = _timed(store.write_documents, [Document(id=ADDED_ID, content=added,
                                                                 meta={"title": "", "year": FILTER_YEAR})])
    hits, result["search_after_add_s"] = _timed(store.bm25_retrieval, added, top_k=TOP_K)
    result["added_found"] = ADDED_ID in [doc.id for doc in hits]
    return result


def _dense_chunks(count: int, seed: int):
    """Random float32 vectors (dimension 384), the same for every child, ``DENSE_BATCH`` rows at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, count, DENSE_BATCH):
        yield start, rng.standard_normal((min(DENSE_BATCH, count - start), DENSE_DIM), dtype=np.float32)


def child_dense_build(kind: str, folder: str, count: int, seed: int) -> dict:
    """``ours``: ``FAISSDocumentStore.write_documents`` a batch of 10k at a time, then ``save``;
    ``faiss``: ``IndexFlatIP.add`` of the normalized chunks, then ``faiss.write_index``."""
    folder = Path(folder)
    if kind == "ours":
        from haystack import Document

        from rerank_pipeline.components.faiss_store import FAISSDocumentStore

        store = FAISSDocumentStore(index_type="flat", use_gpu=False)
        for start, chunk in _dense_chunks(count, seed):
            store.write_documents([Document(id=f"v{start + i}", content=f"vector {start + i}", embedding=row.tolist())
                                   for i, row in enumerate(chunk)])
        store.save(folder)
    else:
        import faiss

        index = faiss.IndexFlatIP(DENSE_DIM)
        for _, chunk in _dense_chunks(count, seed):
            faiss.normalize_L2(chunk)
            index.add(chunk)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(folder / "flat.index"))
    return {"documents": count}


def child_dense_serve(kind: str, folder: str, queries: int, single: int, seed: int) -> dict:
    import numpy as np

    vectors = np.random.default_rng(seed + 1).standard_normal((queries, DENSE_DIM), dtype=np.float32)
    result: dict = {}
    if kind == "ours":
        from rerank_pipeline.components.faiss_store import FAISSDocumentStore

        as_lists = vectors.tolist()
        store, result["open_s"] = _timed(FAISSDocumentStore, index_dir=folder, use_gpu=False)
        _, result["first_search_s"] = _timed(store.embedding_retrieval, as_lists[0], top_k=TOP_K)  # builds the index
        found, result["batch_s"] = _timed(store.embedding_retrieval_batch, as_lists, top_k=TOP_K)
        result["top10"] = [[doc.id for doc in docs] for docs in found]
        result["single_p50_ms"] = _p50_ms([_timed(store.embedding_retrieval, q, top_k=TOP_K)[1]
                                           for q in as_lists[:single]])
    else:
        import faiss

        index, result["open_s"] = _timed(faiss.read_index, str(Path(folder) / "flat.index"))

        def search(batch):
            batch = batch.copy()
            faiss.normalize_L2(batch)
            _, rows = index.search(batch, TOP_K)
            return [[f"v{r}" for r in row if r >= 0] for row in rows.tolist()]

        _, result["first_search_s"] = _timed(search, vectors[:1])
        result["top10"], result["batch_s"] = _timed(search, vectors)
        result["single_p50_ms"] = _p50_ms([_timed(search, vectors[i : i + 1])[1] for i in range(single)])
    result["batch_qps"] = queries / result["batch_s"]
    result["rss_serving_mb"], result["hwm_serving_mb"] = _status_mb("VmRSS"), _status_mb("VmHWM")
    return result


CHILDREN = {
    "imports": child_imports,
    "bm25s-build": child_bm25s_build,
    "bm25s-serve": child_bm25s_serve,
    "ours-serve": child_ours_serve,
    "dense-build": child_dense_build,
    "dense-serve": child_dense_serve,
}


# ------------------------------------------------------------------------------------------------ the parent


def child_environment() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HAYSTACK_TELEMETRY_ENABLED="False", TQDM_DISABLE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _memory_limit() -> int:
    """Bytes of address space a bm25s child may take: 90% of the machine's memory (``MemTotal``)."""
    with open("/proc/meminfo", encoding="utf-8") as handle:
        total_kb = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
    return int(total_kb * 1024 * 0.9)


def run_child(command: list[str], log: Path, result_file: Path | None = None, limit_memory: bool = False) -> dict:
    """Run ``command`` to its end; returns its result (if any), wall seconds and peak RSS (``ru_maxrss``).

    A child that fails (at 10M documents one may run out of memory) gives ``{"error": ...}`` and the run goes on:
    the failure is a finding, printed with the end of its log. ``limit_memory`` caps the child's address space at
    :func:`_memory_limit` (bm25s's children, which import no torch), so it fails with ``MemoryError`` instead of
    calling the kernel's OOM killer onto the machine.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    limit = _memory_limit() if limit_memory else None

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with open(log, "w", encoding="utf-8") as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=child_environment(),
                                   preexec_fn=cap)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    figures = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        cause = " (SIGKILL: out of memory?)" if code == -9 else ""
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        error = f"exited {code}{cause} after {wall:.0f} s at {figures['peak_rss_mb']:.0f} MB; see {log}"
        print(f"FAILED: {' '.join(Path(c).name for c in command[1:4])} ...: {error}\n    " + "\n    ".join(tail),
              flush=True)
        return {**figures, "error": error}
    return {**(json.loads(result_file.read_text()) if result_file else {}), **figures}


def run_function(name: str, work: Path, **arguments) -> dict:
    stem = f"{name}-{arguments.get('kind', '')}{'-mmap' if arguments.get('mmap') else ''}".replace("--", "-").strip("-")
    result_file, arguments_file = work / "logs" / f"{stem}.json", work / "logs" / f"{stem}.args.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    arguments_file.write_text(json.dumps(arguments), encoding="utf-8")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-args", str(arguments_file),
               "--child-result", str(result_file)]
    return run_child(command, result_file.with_suffix(".log"), result_file, limit_memory=name.startswith("bm25s"))


def link_copy(source: Path, target: Path) -> None:
    """A copy of an index folder made of hard links (no disk, no time): a generation's files are written once and
    replaced by renames, never changed in place. The journal, which is appended to, is copied."""
    def link(src: str, dst: str) -> None:
        if Path(src).name == "journal.jsonl":
            shutil.copy2(src, dst)
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> str:
    from importlib import metadata

    found = []
    for name in ("bm25s", "PyStemmer", "numpy", "scipy", "faiss-cpu", "haystack-ai"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return f"rerank-pipeline commit {commit.strip() or 'unknown'}; Python {sys.version.split()[0]}; " + ", ".join(found)


def build(args: argparse.Namespace, work: Path, sentences: list[str] | None) -> dict:
    """The corpus and every index, each build timed in its own child process; recorded in ``builds.json``."""
    corpus = work / CORPUS_FILE
    builds: dict = {}
    start = time.perf_counter()
    info = write_corpus(corpus, args.documents, sentences, args.seed)
    info.update(source=str(args.beir_dir), sentences=len(sentences), build_s=time.perf_counter() - start)
    (work / CORPUS_INFO).write_text(json.dumps(info, indent=2))
    builds["corpus"] = info
    print(f"corpus: {args.documents} documents, {info['bytes'] / 2**20:.1f} MiB ({info['bytes'] / args.documents:.0f} "
          f"bytes a document) from {len(sentences)} sentences, in {info['build_s']:.1f} s", flush=True)

    for name in ("ours", "bm25s"):
        shutil.rmtree(work / name, ignore_errors=True)
    command = [sys.executable, "-m", "rerank_pipeline", "index", "--jsonl", str(corpus), "--index-dir",
               str(work / "ours"), "--rebuild", "--no-progress"]
    builds["ours"] = run_child(command, work / "logs" / "ours-build.log")
    said = re.search(r"\(bm25, ([\d.]+) s\)", (work / "logs" / "ours-build.log").read_text())
    builds["ours"]["cli_index_s"] = float(said.group(1)) if said else None
    print(f"built ours in {builds['ours']['wall_s']:.1f} s", flush=True)
    (work / "bm25s").mkdir()
    builds["bm25s"] = run_function("bm25s-build", work, corpus=str(corpus), folder=str(work / "bm25s"))
    print(f"built bm25s in {builds['bm25s']['wall_s']:.1f} s", flush=True)
    if args.dense:
        for kind in ("ours", "faiss"):
            folder = work / f"dense-{kind}"
            shutil.rmtree(folder, ignore_errors=True)
            builds[f"dense-{kind}"] = run_function("dense-build", work, kind=kind, folder=str(folder),
                                                   count=args.documents, seed=args.seed)
            print(f"built dense {kind} in {builds[f'dense-{kind}']['wall_s']:.1f} s", flush=True)
    (work / "builds.json").write_text(json.dumps(builds, indent=2))
    return builds


def agreement(ours: dict, theirs: dict) -> tuple[float | None, float | None]:
    """Share of queries whose top-10 ids are equal (in order), and equal as sets; None when a side is missing."""
    if "top10" not in ours or "top10" not in theirs:
        return None, None
    pairs = list(zip(ours["top10"], theirs["top10"]))
    return (sum(a == b for a, b in pairs) / len(pairs), sum(set(a) == set(b) for a, b in pairs) / len(pairs))


def vocabulary_sizes(work: Path) -> tuple[bool | None, int | None, int | None]:
    """Whether both engines indexed the same terms (their saved bm25s vocabularies), and the sizes."""
    sizes = []
    for path in (work / "ours" / "bm25s" / "vocab.index.json", work / "bm25s" / "bm25s" / "vocab.index.json"):
        sizes.append(set(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None)
    if None in sizes:
        return None, *(len(v) if v is not None else None for v in sizes)
    return sizes[0] == sizes[1], len(sizes[0]), len(sizes[1])


def fmt(value, digits: int = 2) -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, str):
        return value
    if value != value:  # nan
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) < 1:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def ratio(ours, anchor) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(anchor, (int, float)) or not anchor:
        return "-"
    return f"×{ours / anchor:.2f}"


def print_table(title: str, rows: list[tuple], headers: tuple[str, ...]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def build_figures(result: dict) -> dict:
    """A failed build's figures read FAILED in the table (its time and memory are on the FAILED line)."""
    return {**result, "wall_s": "FAILED", "peak_rss_mb": "FAILED"} if "error" in result else result


def failed(label: str, *results: dict) -> str | None:
    errors = [result["error"] for result in results if "error" in result]
    return f"{label}: FAILED, {errors[0]}" if errors else None


def report_bm25(builds: dict, serve: dict, work: Path, args: argparse.Namespace) -> dict:
    none: dict = {}
    ours, anchor, mapped = serve.get("ours", none), serve.get("bm25s", none), serve.get("bm25s-mmap", none)
    imports_ours, imports_anchor = serve["imports-ours"], serve["imports-bm25s"]
    bo, ba = build_figures(builds["ours"]), build_figures(builds["bm25s"])
    same_order, same_set = agreement(ours, anchor)
    same_vocab, ours_terms, anchor_terms = vocabulary_sizes(work)
    ours_mb = folder_mb(work / "ours") if "error" not in bo else None
    anchor_mb = folder_mb(work / "bm25s") if "error" not in ba else None
    rows = [
        ("imports only: s", imports_ours.get("import_s"), imports_anchor.get("import_s"), None),
        ("imports only: RSS MB", imports_ours.get("rss_mb"), imports_anchor.get("rss_mb"), None),
        ("index s (wall, child process)", bo["wall_s"], ba["wall_s"], None),
        ("index peak RSS MB", bo["peak_rss_mb"], ba["peak_rss_mb"], None),
        ("folder MB", ours_mb, anchor_mb, None),
        ("open s", ours.get("open_s"), anchor.get("open_s"), mapped.get("open_s")),
        ("RSS after open MB", ours.get("rss_open_mb"), anchor.get("rss_open_mb"), mapped.get("rss_open_mb")),
        (f"batch q/s ({args.queries} queries, top-{TOP_K})", ours.get("batch_qps"), anchor.get("batch_qps"),
         mapped.get("batch_qps")),
        (f"single query p50 ms ({args.single_queries})", ours.get("single_p50_ms"), anchor.get("single_p50_ms"),
         mapped.get("single_p50_ms")),
        (f"unfiltered p50 ms (first {args.filtered_queries})", ours.get("unfiltered_p50_ms"),
         anchor.get("unfiltered_p50_ms"), mapped.get("unfiltered_p50_ms")),
        (f"filtered p50 ms (meta.year == {FILTER_YEAR})", ours.get("filtered_p50_ms"), anchor.get("filtered_p50_ms"),
         mapped.get("filtered_p50_ms")),
        ("RSS serving MB (after open + searches)", ours.get("rss_serving_mb"), anchor.get("rss_serving_mb"),
         mapped.get("rss_serving_mb")),
        ("peak RSS serving MB", ours.get("hwm_serving_mb"), anchor.get("hwm_serving_mb"), mapped.get("hwm_serving_mb")),
        ("add 1 document s (bm25s: rebuild)", ours.get("add_s"), anchor.get("add_s"), None),
        ("then 1 search s", ours.get("search_after_add_s"), anchor.get("search_after_add_s"), None),
    ]
    table = [(name, fmt(o), fmt(a), fmt(m), ratio(o, a)) for name, o, a, m in rows]
    sides = (ours, anchor, mapped)
    table.append(("filtered / unfiltered p50",
                  *(ratio(side.get("filtered_p50_ms"), side.get("unfiltered_p50_ms")) for side in sides), "-"))
    print_table(
        f"BM25, {args.documents:,} documents: ratio = ours / bm25s (no mmap)",
        table, ("measure", "ours", "bm25s", "bm25s mmap", "ratio"),
    )
    print(f"\ntop-{TOP_K} ids equal to bm25s's: {fmt(same_order, 3)} of the {args.queries} queries in order, "
          f"{fmt(same_set, 3)} as sets; vocabularies "
          f"{'-' if same_vocab is None else 'equal' if same_vocab else 'DIFFERENT'} ({ours_terms} / {anchor_terms} "
          f"terms); ours' filtered hits all of year {FILTER_YEAR}: {fmt(ours.get('filter_correct'))}; the added "
          f"document found: ours {fmt(ours.get('added_found'))}, bm25s {fmt(anchor.get('added_found'))}")
    if bo.get("cli_index_s") is not None:
        print(f"ours' index time as the CLI reports it (write + save, without reading the corpus and imports): "
              f"{bo['cli_index_s']:.1f} s")
    for line in (failed("ours, index", bo), failed("bm25s, index", ba), failed("ours, serving", ours),
                 failed("bm25s, serving", anchor, mapped)):
        if line:
            print(line)
    return {"rows": {name: {"ours": o, "bm25s": a, "bm25s_mmap": m} for name, o, a, m in rows},
            "top10_equal_in_order": same_order, "top10_equal_as_sets": same_set, "vocabularies_equal": same_vocab}


def report_dense(builds: dict, serve: dict, work: Path, args: argparse.Namespace) -> dict:
    none: dict = {}
    ours, anchor = serve.get("dense-ours", none), serve.get("dense-faiss", none)
    bo, ba = build_figures(builds["dense-ours"]), build_figures(builds["dense-faiss"])
    same_order, same_set = agreement(ours, anchor)
    rows = [
        ("index s (wall, child process)", bo["wall_s"], ba["wall_s"]),
        ("index peak RSS MB", bo["peak_rss_mb"], ba["peak_rss_mb"]),
        ("folder MB", None if "error" in bo else folder_mb(work / "dense-ours"),
         None if "error" in ba else folder_mb(work / "dense-faiss")),
        ("open s", ours.get("open_s"), anchor.get("open_s")),
        ("first search s (ours builds the flat index)", ours.get("first_search_s"), anchor.get("first_search_s")),
        (f"batch q/s ({args.queries} queries, top-{TOP_K})", ours.get("batch_qps"), anchor.get("batch_qps")),
        (f"single query p50 ms ({args.single_queries})", ours.get("single_p50_ms"), anchor.get("single_p50_ms")),
        ("RSS serving MB", ours.get("rss_serving_mb"), anchor.get("rss_serving_mb")),
        ("peak RSS serving MB", ours.get("hwm_serving_mb"), anchor.get("hwm_serving_mb")),
    ]
    print_table(
        f"Dense, {args.documents:,} random vectors of dimension {DENSE_DIM} (exact inner product): "
        "ratio = ours (FAISSDocumentStore) / raw faiss (IndexFlatIP)",
        [(name, fmt(o), fmt(a), ratio(o, a)) for name, o, a in rows], ("measure", "ours", "faiss", "ratio"),
    )
    print(f"\ntop-{TOP_K} ids equal to faiss's: {fmt(same_order, 3)} in order, {fmt(same_set, 3)} as sets")
    for line in (failed("ours, index", bo), failed("faiss, index", ba), failed("ours, serving", ours),
                 failed("faiss, serving", anchor)):
        if line:
            print(line)
    return {"rows": {name: {"ours": o, "faiss": a} for name, o, a in rows}, "top10_equal_in_order": same_order}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=50_000, help="N, documents in the corpus (default 50,000)")
    parser.add_argument("--queries", type=int, default=1000, help="batch queries (the collection's, cycled)")
    parser.add_argument("--single-queries", type=int, default=200, help="queries timed one at a time (p50)")
    parser.add_argument("--filtered-queries", type=int, default=20, help="queries timed with the meta.year filter")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: /tmp/rerank-pipeline-scale-N)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and indexes (for --skip-build)")
    parser.add_argument("--skip-build", action="store_true",
                        help="reuse the corpus and indexes in --work-dir (their build figures come from builds.json)")
    parser.add_argument("--dense", action="store_true", help="also FAISSDocumentStore vs raw faiss on random vectors")
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR, help="BEIR folder: sentences and queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-args", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = CHILDREN[args.child](**json.loads(args.child_args.read_text(encoding="utf-8")))
        args.child_result.write_text(json.dumps(result))
        return 0
    if args.documents < TOP_K:
        parser.error(f"--documents must be at least {TOP_K}")
    if min(args.queries, args.single_queries, args.filtered_queries) < 1:
        parser.error("--queries, --single-queries and --filtered-queries must be >= 1")
    args.single_queries = min(args.single_queries, args.queries)
    args.filtered_queries = min(args.filtered_queries, args.single_queries)

    work = args.work_dir or Path(tempfile.gettempdir()) / f"rerank-pipeline-scale-{args.documents}"
    created = not work.exists()
    before = uptime()
    print(f"uptime before: {before}")
    print(f"CPU: {cpu_description()}")
    print(f"{versions()}")
    print(f"work dir: {work}", flush=True)
    queries = read_queries(args.beir_dir, args.queries)
    try:
        if args.skip_build:
            info_path = work / CORPUS_INFO
            info = json.loads(info_path.read_text()) if info_path.is_file() else {}
            if info.get("documents") != args.documents or info.get("seed") != args.seed:
                raise SystemExit(f"scale.py: error: --skip-build: {info_path} does not describe a corpus of "
                                 f"{args.documents} documents with seed {args.seed}; build it first (--keep)")
            builds = json.loads((work / "builds.json").read_text())
            missing = [name for name in ("ours", "bm25s", *(("dense-ours", "dense-faiss") if args.dense else ()))
                       if name not in builds or not (work / name).is_dir()]
            if missing:
                raise SystemExit(f"scale.py: error: --skip-build: no {', '.join(missing)} in {work}; build first")
            print("reusing the corpus and indexes; build figures from builds.json (the run that built them)")
        else:
            work.mkdir(parents=True, exist_ok=True)
            builds = build(args, work, source_sentences(args.beir_dir))

        corpus = str(work / CORPUS_FILE)
        common = {"corpus": corpus, "queries": queries, "single": args.single_queries,
                  "filtered": args.filtered_queries}
        serving = work / "ours-serving"  # the add-one-document step writes: it runs on a copy
        shutil.rmtree(serving, ignore_errors=True)
        serve = {f"imports-{kind}": run_function("imports", work, kind=kind) for kind in ("ours", "bm25s")}
        if "error" not in builds["ours"]:
            link_copy(work / "ours", serving)
            serve["ours"] = run_function("ours-serve", work, folder=str(serving), **common)
            shutil.rmtree(serving, ignore_errors=True)
            for lock in work.glob(f".{serving.name}.lock*"):
                lock.unlink()
            print("served ours", flush=True)
        if "error" not in builds["bm25s"]:
            serve["bm25s"] = run_function("bm25s-serve", work, folder=str(work / "bm25s"), mmap=False, rebuild=True,
                                          **common)
            serve["bm25s-mmap"] = run_function("bm25s-serve", work, folder=str(work / "bm25s"), mmap=True,
                                               rebuild=False, **common)
            print("served bm25s", flush=True)
        if args.dense:
            for kind in ("ours", "faiss"):
                if "error" not in builds[f"dense-{kind}"]:
                    serve[f"dense-{kind}"] = run_function(
                        "dense-serve", work, kind=kind, folder=str(work / f"dense-{kind}"), queries=args.queries,
                        single=args.single_queries, seed=args.seed)
            print("served dense", flush=True)

        report = {"documents": args.documents, "queries": args.queries, "cpu": cpu_description(),
                  "versions": versions(), "uptime_before": before, "builds": builds}
        report["bm25"] = report_bm25(builds, serve, work, args)
        if args.dense:
            report["dense"] = report_dense(builds, serve, work, args)
        after = uptime()
        print(f"\nuptime after: {after}")
        if args.output:
            report["uptime_after"] = after
            args.output.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if not args.keep and not args.skip_build:
            for name in (CORPUS_FILE, CORPUS_INFO, "builds.json"):
                (work / name).unlink(missing_ok=True)
            for name in ("ours", "bm25s", "dense-ours", "dense-faiss", "ours-serving", "logs"):
                shutil.rmtree(work / name, ignore_errors=True)
            for lock in work.glob(".*.lock*"):
                lock.unlink(missing_ok=True)
            if created:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
