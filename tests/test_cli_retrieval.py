"""`rerank-pipeline index` / `search`: end to end on Cranfield, bad input, atomic index folders."""

from __future__ import annotations

import json

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore
from reference_metrics import read_qrels


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = [
    json.dumps({"_id": "1", "title": "panel flutter", "text": "supersonic flutter of thin wing panels"}),
    json.dumps({"id": "2", "content": "heat transfer to a blunt body in hypersonic flow", "year": 1960}),
]


def test_index_and_search_cranfield_end_to_end(cranfield_dir, tmp_path, tiny_bert, capsys):
    index_dir = tmp_path / "cranfield"
    assert main(["index", "--beir-dir", str(cranfield_dir), "--index-dir", str(index_dir)]) == 0
    assert "indexed 1400 documents" in capsys.readouterr().out
    assert json.loads((index_dir / "index.json").read_text())["backend"] == "bm25"

    query = "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"
    assert main(["search", query, "--index-dir", str(index_dir), "--no-rerank", "--top-k", "5", "--json"]) == 0
    first_stage = json.loads(capsys.readouterr().out)
    assert [row["rank"] for row in first_stage["results"]] == [1, 2, 3, 4, 5]
    # the gains of the top 5 read from query 1's qrels: three judged-relevant documents, one of the top grade
    # (486, ranked 2nd, is in no qrels line at all)
    grades = {doc_id: gain for doc_id, gain in read_qrels(cranfield_dir, "test")["1"].items() if gain > 0}
    assert [grades.get(row["id"], 0) for row in first_stage["results"]] == [2, 0, 3, 0, 2]

    assert main(["search", query, "--index-dir", str(index_dir), "--model", str(tiny_bert), "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"query: {query}") and len(table.strip().splitlines()) == 2 + 3


def test_search_needs_a_model_or_no_rerank(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "docs.jsonl", GOOD)
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(tmp_path / "idx")]) == 0
    assert main(["search", "flutter", "--index-dir", str(tmp_path / "idx")]) == 2
    assert "--no-rerank" in capsys.readouterr().err


def test_jsonl_fields_and_meta(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "docs.jsonl", GOOD)
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(tmp_path / "idx")]) == 0
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx")
    documents = {doc.id: doc for doc in store.filter_documents()}
    assert documents["1"].meta["title"] == "panel flutter" and documents["2"].meta["year"] == 1960


def test_malformed_line_stops_with_its_number_or_is_skipped(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "docs.jsonl", [GOOD[0], "{not json", GOOD[1]])
    index_dir = tmp_path / "idx"
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(index_dir)]) == 2
    assert f"{corpus}:2:" in capsys.readouterr().err
    assert not index_dir.exists()
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(index_dir), "--on-bad-line", "skip"]) == 0
    assert "skipped 1 malformed line(s)" in capsys.readouterr().err
    assert EmbeddedBM25DocumentStore(index_dir=index_dir).count_documents() == 2


@pytest.mark.parametrize(
    "lines, message",
    [([], "corpus is empty"), ([json.dumps({"_id": "1", "title": "no text"})], ":1: needs an '_id'")],
)
def test_empty_corpus_and_missing_fields(tmp_path, capsys, lines, message):
    corpus = write_jsonl(tmp_path / "docs.jsonl", lines)
    assert main(["index", "--jsonl", str(corpus)]) == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_and_unknown_backend(tmp_path, capsys):
    assert main(["index", "--jsonl", str(tmp_path / "nope.jsonl")]) == 2
    assert "corpus file not found" in capsys.readouterr().err
    assert main(["index", "--beir-dir", str(tmp_path / "nope")]) == 2
    assert "BEIR folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "--jsonl", "x.jsonl", "--first-stage", "solr"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'solr'" in capsys.readouterr().err


def test_failure_midway_leaves_the_previous_index_untouched(tmp_path, monkeypatch, capsys):
    corpus = write_jsonl(tmp_path / "docs.jsonl", GOOD)
    index_dir = tmp_path / "idx"
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(index_dir)]) == 0
    before = {p.name: p.read_bytes() for p in index_dir.rglob("*") if p.is_file()}

    def write_half_then_fail(self, folder):
        (folder / "documents.jsonl").write_text("partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(EmbeddedBM25DocumentStore, "write_to", write_half_then_fail)
    more = write_jsonl(tmp_path / "more.jsonl", [json.dumps({"_id": "3", "text": "jet noise"})])
    assert main(["index", "--jsonl", str(more), "--index-dir", str(index_dir)]) == 2
    assert "disk full" in capsys.readouterr().err
    # The snapshot is untouched; the write itself was journaled (durable) before the failed re-save.
    after = {p.name: p.read_bytes() for p in index_dir.rglob("*") if p.is_file()}
    assert {name: data for name, data in after.items() if name != "journal.jsonl"} == before
    monkeypatch.undo()
    assert EmbeddedBM25DocumentStore(index_dir=index_dir).count_documents() == len(GOOD) + 1
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".idx.lock"))  # the writer lock stays
    assert left == ["docs.jsonl", "idx", "more.jsonl"]  # no staging folders left


def test_index_updates_an_existing_index_unless_rebuild(tmp_path, capsys):
    index_dir = tmp_path / "idx"
    main(["index", "--jsonl", str(write_jsonl(tmp_path / "a.jsonl", GOOD)), "--index-dir", str(index_dir)])
    extra = write_jsonl(tmp_path / "b.jsonl", [json.dumps({"_id": "3", "text": "jet noise"})])
    main(["index", "--jsonl", str(extra), "--index-dir", str(index_dir)])
    assert EmbeddedBM25DocumentStore(index_dir=index_dir).count_documents() == 3
    main(["index", "--jsonl", str(extra), "--index-dir", str(index_dir), "--rebuild"])
    assert EmbeddedBM25DocumentStore(index_dir=index_dir).count_documents() == 1


def test_search_table_shows_a_numeric_title():
    from haystack import Document

    from rerank_pipeline.cli.retrieval import _render_table

    table = _render_table("novels", [Document(id="b1", content="Big Brother is watching", meta={"title": 1984}, score=1.0)], 120)
    assert "1984 | Big Brother is watching" in table


def test_a_meta_object_becomes_the_documents_meta_and_a_meta_year_filter_matches(tmp_path, capsys):
    lines = [
        json.dumps({"_id": "a", "title": "panel flutter", "text": "flutter of wing panels", "meta": {"year": 1999}}),
        json.dumps({"_id": "b", "text": "flutter of thin plates", "lang": "en", "meta": {"year": 1960, "title": "plates"}}),
        json.dumps({"_id": "c", "text": "flutter at hypersonic speed", "meta": None}),
    ]
    index_dir = tmp_path / "idx"
    assert main(["index", "--jsonl", str(write_jsonl(tmp_path / "docs.jsonl", lines)), "--index-dir", str(index_dir)]) == 0
    store = EmbeddedBM25DocumentStore(index_dir=index_dir)
    documents = {doc.id: doc for doc in store.filter_documents()}
    assert documents["a"].meta == {"title": "panel flutter", "year": 1999}
    assert documents["b"].meta == {"title": "plates", "lang": "en", "year": 1960}  # meta.title fills a missing title
    assert documents["c"].meta == {"title": ""}
    year = {"field": "meta.year", "operator": "==", "value": 1999}
    assert [doc.id for doc in store.bm25_retrieval("flutter", top_k=10, filters=year)] == ["a"]
    assert [doc.id for doc in store.filter_documents(year)] == ["a"]
    assert {doc.id for doc in store.bm25_retrieval("flutter", top_k=10)} == {"a", "b", "c"}


def test_a_meta_object_in_a_beir_corpus_becomes_the_documents_meta(tmp_path, capsys):
    beir = tmp_path / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", [
        json.dumps({"_id": "1", "title": "", "text": "jet noise", "meta": {"year": 1999}}),
        json.dumps({"_id": "2", "title": "", "text": "jet engines", "meta": {"year": 1950}}),
    ])
    assert main(["index", "--beir-dir", str(beir), "--index-dir", str(tmp_path / "idx")]) == 0
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx")
    found = store.bm25_retrieval("jet", filters={"field": "meta.year", "operator": "==", "value": 1999})
    assert [doc.id for doc in found] == ["1"] and found[0].meta == {"title": "", "year": 1999}


@pytest.mark.parametrize(
    "line, message",
    [
        ({"_id": "1", "text": "jet noise", "meta": [1999]}, ":2: 'meta' must be a JSON object, got a list"),
        ({"_id": "1", "text": "jet noise", "meta": "1999"}, ":2: 'meta' must be a JSON object, got a string"),
        ({"_id": "1", "title": "Jets", "text": "jet noise", "meta": {"title": "Noise"}},
         ":2: 'title' is given twice with different values: 'Jets' at the top level and 'Noise' in 'meta'"),
        ({"_id": "1", "text": "jet noise", "year": 1999, "meta": {"year": 2000}},
         ":2: 'year' is given twice with different values: 1999 at the top level and 2000 in 'meta'"),
    ],
)
def test_a_bad_meta_is_one_line_naming_file_and_line_or_is_skipped(tmp_path, capsys, line, message):
    corpus = write_jsonl(tmp_path / "docs.jsonl", [GOOD[0], json.dumps(line), GOOD[1]])
    index_dir = tmp_path / "idx"
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(index_dir)]) == 2
    error = capsys.readouterr().err
    assert f"{corpus}{message}" in error and len(error.strip().splitlines()) == 1
    assert not index_dir.exists()
    assert main(["index", "--jsonl", str(corpus), "--index-dir", str(index_dir), "--on-bad-line", "skip"]) == 0
    assert "skipped 1 malformed line(s): 2" in capsys.readouterr().err
    assert EmbeddedBM25DocumentStore(index_dir=index_dir).count_documents() == 2


def test_index_type_takes_a_faiss_factory_string(tmp_path, capsys):
    from tiny_models import make_tiny_bert_encoder

    encoder = make_tiny_bert_encoder(tmp_path / "encoder")
    corpus = write_jsonl(tmp_path / "docs.jsonl", GOOD)
    index_dir = tmp_path / "idx"
    common = ["index", "--jsonl", str(corpus), "--first-stage", "dense", "--embedding-model", str(encoder)]
    assert main([*common, "--index-dir", str(index_dir), "--index-type", "SQ8"]) == 0
    settings = json.loads((index_dir / "index.json").read_text())
    assert (settings["index_type"], settings["faiss_factory"]) == ("SQ8", "SQ8")
    assert (index_dir / "faiss.index").is_file()
    capsys.readouterr()
    assert main(["search", "hypersonic heat", "--index-dir", str(index_dir), "--no-rerank", "--json"]) == 0
    assert {row["id"] for row in json.loads(capsys.readouterr().out)["results"]} == {"1", "2"}
    assert main([*common, "--index-dir", str(tmp_path / "bad"), "--index-type", "IVF4,Bogus"]) == 2
    error = capsys.readouterr().err
    assert "'IVF4,Bogus'" in error and not (tmp_path / "bad").exists()
