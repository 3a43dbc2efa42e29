"""``eval`` on a BEIR folder holds no corpus: the corpus is read from its file (BeirCorpus), the embedded BM25 first
stage is streamed into an index folder, and the reranker's texts are read by id; the figures equal the in-memory
path's."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tracemalloc
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.datasets import BeirCorpus, DatasetError, RetrievalDataset, load_beir, load_corpus, load_qrels
from rerank_pipeline.eval import evaluate_end_to_end, load_scorer, rerank_protocol, retrieve_rankings
from rerank_pipeline.first_stage import build_first_stage
from rerank_pipeline.provenance import dataset_fingerprint
from test_eval_protocol import WORDS

LONG_TEXT = "supersonic " * 1200  # a line longer than one read (LINE_READ_BYTES)

CORPUS_LINES = [
    {"_id": "d1", "title": "Wing", "text": "flow over a wing"},
    "",  # blank: not a line
    {"_id": "d2", "title": None, "text": "caf\u00e9 \u00e0 Mach 2, \u201cshock\u201d"},
    "{not json",
    {"_id": "d1", "title": "Wing again", "text": "the second d1"},
    [1, 2],  # not an object
    {"_id": 7, "text": "a numeric id, no title"},
    {"_id": "d3", "title": "no text"},
    b'{"_id": "d4", "title": "", "text": "latin-1 \xe9"}',  # not utf-8
    {"_id": "d5", "title": "long", "text": LONG_TEXT},
    {"_id": "d2", "title": "T", "text": None},
    {"_id": "d1", "title": "", "text": "the third d1"},
    {"_id": "d6", "title": "", "text": "last line, no newline"},
]


def write_corpus(path: Path, lines=CORPUS_LINES) -> Path:
    with open(path, "wb") as out:
        for index, line in enumerate(lines):
            if not isinstance(line, bytes):
                line = (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)).encode("utf-8")
            out.write(line + (b"\n" if index < len(lines) - 1 else b""))
    return path


@pytest.mark.parametrize("on_duplicate", ["last", "first"])
def test_beir_corpus_equals_load_corpus_with_bad_lines_and_duplicates(tmp_path, caplog, on_duplicate):
    path = write_corpus(tmp_path / "corpus.jsonl")
    with caplog.at_level(logging.WARNING, logger="rerank_pipeline.datasets"):
        expected = load_corpus(path, on_bad_line="skip", on_duplicate=on_duplicate)
        corpus = BeirCorpus(path, on_bad_line="skip", on_duplicate=on_duplicate)
    loaded_warning, streamed_warning = caplog.messages  # the same report: skipped lines and duplicates
    assert streamed_warning == loaded_warning == corpus.report.summary()
    assert "skipped 4 malformed line(s): 4, 6, 8, 9" in loaded_warning and "3 duplicate ids" in loaded_warning
    assert list(corpus.items()) == list(expected.items())  # same entries, same order
    assert list(corpus) == list(expected) == ["d1", "d2", "7", "d5", "d6"] and len(corpus) == 5
    assert list(corpus.values()) == list(expected.values())
    assert all(corpus[doc_id] == entry for doc_id, entry in expected.items())  # read one at a time, by id
    assert corpus["d1"]["text"] == ("the third d1" if on_duplicate == "last" else "flow over a wing")
    assert corpus["d5"]["text"] == LONG_TEXT and corpus["7"] == {"title": "", "text": "a numeric id, no title"}
    assert corpus["d2"] == ({"title": "T", "text": ""} if on_duplicate == "last" else expected["d2"])
    assert "d3" not in corpus and "d4" not in corpus and corpus.get("d4") is None
    with pytest.raises(KeyError):
        corpus["d4"]
    assert corpus == expected


def test_beir_corpus_stops_where_load_corpus_stops(tmp_path):
    path = write_corpus(tmp_path / "corpus.jsonl")
    for options, message in (({"on_bad_line": "stop"}, "corpus.jsonl:4: not valid JSON"),
                             ({"on_bad_line": "skip", "on_duplicate": "error"},
                              "corpus.jsonl:5: id 'd1' already appeared on line 1")):
        with pytest.raises(DatasetError) as in_memory:
            load_corpus(path, **options)
        with pytest.raises(DatasetError) as streamed:
            BeirCorpus(path, **options)
        assert str(streamed.value) == str(in_memory.value) and message in str(streamed.value)
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="corpus is empty"):
        BeirCorpus(tmp_path / "empty.jsonl")
    with pytest.raises(DatasetError, match="corpus file not found"):
        BeirCorpus(tmp_path / "missing.jsonl")


def test_a_corpus_file_changed_after_loading_is_an_error_not_a_wrong_text(tmp_path):
    path = write_corpus(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "one"}, {"_id": "b", "text": "two"}])
    corpus = BeirCorpus(path)
    write_corpus(path, [{"_id": "b", "text": "two"}, {"_id": "a", "text": "one"}])
    with pytest.raises(DatasetError, match="document 'a'.*changed since the file was read"):
        corpus["a"]
    with pytest.raises(DatasetError, match="changed since"):
        list(corpus.items())


def old_fingerprint(dataset: RetrievalDataset) -> str:
    """The fingerprint as it was computed before streaming: json.dumps of the whole corpus dict."""
    digest = hashlib.sha256()
    for part in (dict(dataset.corpus.items()), dataset.queries, dataset.qrels):
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def test_the_fingerprint_streams_and_equals_the_whole_dump(tmp_path):
    lines = [line for line in CORPUS_LINES if isinstance(line, dict) and "text" in line]
    lines += [{"_id": "Z\u00e9", "text": "non-ascii id"}, {"_id": "a\\b\"c", "text": "escapes\n\ttab"}]
    path = write_corpus(tmp_path / "corpus.jsonl", lines)
    streamed = RetrievalDataset("c", BeirCorpus(path), {"q": "wing"}, {"q": {"d1": 1}})
    in_memory = RetrievalDataset("c", load_corpus(path), {"q": "wing"}, {"q": {"d1": 1}})
    assert dataset_fingerprint(streamed)["sha256"] == old_fingerprint(in_memory)
    assert dataset_fingerprint(in_memory) == dataset_fingerprint(streamed)
    streamed.qrels = {"q": {"d1": 2}}  # queries and qrels may change after a first fingerprint; the corpus cannot
    assert dataset_fingerprint(streamed)["sha256"] == old_fingerprint(streamed) != old_fingerprint(in_memory)


def write_collection(root: Path, n_docs: int, n_queries: int, seed: int, words=WORDS, length=(8, 30),
                     extra_lines=()) -> Path:
    """A BEIR folder of ``n_docs`` documents (texts from ``words``), some duplicated or malformed lines."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as out:
        for i in range(n_docs):
            out.write(json.dumps({"_id": f"d{i}", "title": rng.choice(["", "Wing", "Shock"]),
                                  "text": " ".join(rng.choices(words, k=rng.randint(*length)))}) + "\n")
        for line in extra_lines:
            out.write(line + "\n")
    queries = {f"q{q}": " ".join(rng.choices(words, k=rng.randint(2, 5))) for q in range(n_queries)}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()),
                                        encoding="utf-8")
    rows = [f"{q}\td{d}\t{rng.randint(1, 2)}" for q in queries for d in rng.sample(range(n_docs), 3)]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_eval_through_the_stream_equals_the_in_memory_path(tmp_path, tiny_bert):
    extra = ['{"_id": "d3", "title": "", "text": "shock wave replaced"}', "{broken", '{"_id": "d5", "text": "x"}']
    root = write_collection(tmp_path / "streamed", n_docs=80, n_queries=6, seed=3, extra_lines=extra)
    out = tmp_path / "report"
    assert main(["eval", "--beir-dir", str(root), "--first-stage", "bm25", "--model", str(tiny_bert),
                 "--candidates", "20", "--rerank-k", "10", "--always-rerank-positives", "both", "--on-bad-line", "skip",
                 "--on-duplicate", "first", "--batch-size", "16", "--no-progress", "--output", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())

    # the path before streaming: every text in a dict, the BM25 index in memory, the same scorer
    corpus = load_corpus(root / "corpus.jsonl", on_bad_line="skip", on_duplicate="first")
    qrels = load_qrels(root / "qrels" / "test.tsv")
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (root / "queries.jsonl").open()}
    dataset = RetrievalDataset("streamed", corpus, {q: queries[q] for q in qrels}, qrels)
    first_stage = build_first_stage("bm25")
    first_stage.index(list(dataset.documents()))
    rankings = first_stage.retrieve(dict(dataset.queries), top_k=20)
    scorer = load_scorer("cross-encoder", str(tiny_bert))
    for setting, always in (("always_rerank_positives", True), ("retrieved_positives_only", False)):
        expected = rerank_protocol(dataset, rankings, scorer, rerank_k=10, always_rerank_positives=always, batch_size=16)
        assert report["protocol"][setting]["metrics"] == pytest.approx(expected.prefixed(), abs=1e-12)
    expected = evaluate_end_to_end(dataset, rankings, scorer, rerank_k=10, batch_size=16)
    got = report["end_to_end"]["streamed"]
    assert got["first_stage"] == pytest.approx(expected.first_stage, abs=1e-12)
    assert got["reranked"] == pytest.approx(expected.reranked, abs=1e-12)
    assert report["provenance"]["datasets"][0]["sha256"] == old_fingerprint(dataset)
    assert report["provenance"]["datasets"][0]["documents"] == 80

    # the API on load_beir's streamed corpus gives the same rankings as the in-memory index
    streamed = load_beir(root, "test", on_bad_line="skip", on_duplicate="first")
    assert isinstance(streamed.corpus, BeirCorpus)
    assert retrieve_rankings(streamed, "bm25", top_k=20) == rankings


def test_eval_holds_no_corpus(tmp_path, monkeypatch, capsys):
    """Texts of ~8 KB made of 20 long words (so that the BM25 postings are few): evaluating 3,000 of them (24 MB)
    must peak far below the texts' size, whereas holding them (a dict, a list of documents) would exceed it."""
    import rerank_pipeline.components.bm25 as bm25
    import rerank_pipeline.components.document_table as document_table

    rng = random.Random(0)
    long_words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=399)) for _ in range(30)]
    small = write_collection(tmp_path / "small", n_docs=30, n_queries=3, seed=1, words=long_words)
    large = write_collection(tmp_path / "large", n_docs=3000, n_queries=5, seed=2, words=long_words, length=(18, 22))
    text_bytes = sum(len(json.loads(line)["text"]) for line in (large / "corpus.jsonl").open())
    assert text_bytes > 20_000_000
    monkeypatch.setattr(bm25, "BATCH_ROWS", 50)  # the stream's batches, small next to the corpus
    monkeypatch.setattr(document_table, "BATCH_ROWS", 50)
    command = ["eval", "--first-stage", "bm25", "--no-rerank", "--candidates", "10", "--rerank-k", "10", "--no-progress"]
    assert main([*command, "--beir-dir", str(small)]) == 0  # imports and lazy set-up outside the measure
    reads = []
    original = BeirCorpus.__getitem__
    monkeypatch.setattr(BeirCorpus, "__getitem__", lambda self, doc_id: reads.append(doc_id) or original(self, doc_id))
    capsys.readouterr()
    tracemalloc.start()
    try:
        assert main([*command, "--beir-dir", str(large)]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "large: 3000 documents" in capsys.readouterr().out  # the provenance line: every document was read
    assert peak < text_bytes / 4, f"peak {peak / 1e6:.1f} MB while evaluating {text_bytes / 1e6:.1f} MB of texts"
    # texts read one by one: the protocol's candidates and positives, nothing else (5 queries x <= 13)
    assert 0 < len(reads) <= 5 * 13
