"""Documents on disk (issue 20): the Arrow snapshot, its filters against Haystack's, streaming builds, lazy reads."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from haystack import Document
from haystack.errors import FilterError
from haystack.utils.filters import document_matches_filter

from rerank_pipeline.components import document_table, index_folder
from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore
from rerank_pipeline.components.document_table import DocumentTable, Snapshot, write_snapshot
from rerank_pipeline.components.index_folder import IndexFolderError

WORDS = "wing flutter panel supersonic heat transfer boundary layer shock wave nozzle jet noise plate cone".split()
VALUES = [None, 0, 1, 2, -3, 1.5, 2.0, True, False, "a", "b", "2020-01-01", "2020-01-01T00:00:00", "2021-06-30",
          [1, 2], ["a"], {"x": 1}, {"x": "a"}]


def _documents(count: int, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    documents = []
    for i in range(count):
        meta = {}
        for key, choices in (("year", [1999, 2000, 2001, None]), ("number", VALUES), ("name", ["x", "y", "z"]),
                             ("date", ["2020-01-01", "2021-06-30T10:00:00", "2019-12-31"]),
                             ("nested", [{"x": 1}, {"x": 2, "y": "a"}, None])):
            if rng.random() < 0.8:
                meta[key] = rng.choice(choices)
        documents.append(Document(id=f"d{i}", content=" ".join(rng.choices(WORDS, k=8)), meta=meta))
    return documents


def _filters() -> list[dict]:
    fields = ["meta.year", "meta.number", "meta.name", "meta.date", "meta.nested.x", "meta.nested", "meta.missing",
              "year", "content", "id", "score", "meta.nested.x.deeper"]
    values = [1999, 2000.0, 1, 1.5, True, "x", "2020-01-01", "2020-06-01T00:00:00", None, [1999, 2001], ["x", 1],
              {"x": 1}, "d3"]
    comparisons = [{"field": f, "operator": op, "value": v} for f, op, v in
                   itertools.product(fields, ["==", "!=", ">", ">=", "<", "<=", "in", "not in"], values)]
    logical = [
        {"operator": "AND", "conditions": [{"field": "meta.year", "operator": ">=", "value": 2000},
                                           {"field": "meta.name", "operator": "!=", "value": "x"}]},
        {"operator": "OR", "conditions": [{"field": "meta.year", "operator": "==", "value": 1999},
                                          {"field": "meta.nested.x", "operator": "==", "value": 2}]},
        {"operator": "NOT", "conditions": [{"field": "meta.number", "operator": "in", "value": [1, "a"]},
                                           {"field": "meta.year", "operator": "<", "value": 2001}]},
        {"operator": "AND", "conditions": []},
        {"operator": "OR", "conditions": []},
        {"operator": "NOT", "conditions": []},
    ]
    return comparisons + logical


def _haystack(filters: dict, documents: list[Document]):
    """Haystack's verdict on every document, or the type of the error it raises."""
    try:
        return np.array([document_matches_filter(filters, document) for document in documents], dtype=bool)
    except (FilterError, TypeError) as error:  # Haystack raises TypeError for e.g. an int against a dict
        return type(error)


def test_snapshot_round_trips_documents_and_finds_rows_by_id(tmp_path):
    documents = _documents(300) + [Document(id="é ü", content=None, meta={"title": "ü"}, embedding=[0.5, 0.25]),
                                   Document(id="", content="empty id")]
    assert write_snapshot(tmp_path, iter(documents)) == len(documents)
    snapshot = Snapshot(tmp_path)
    assert len(snapshot) == len(documents)
    assert snapshot.documents(range(len(documents))) == documents
    assert [doc for _, batch in snapshot.batches() for doc in batch] == documents
    for row in (0, 5, 299, 300, 301):
        assert snapshot.row_of(documents[row].id) == row
    assert snapshot.row_of("d999") is None and snapshot.row_of("d") is None


def test_a_repeated_id_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'d1' occurs twice"):
        write_snapshot(tmp_path, _documents(3) + [Document(id="d1", content="again")])


def test_filter_masks_equal_haystack_on_every_document(tmp_path):
    documents = _documents(400, seed=1)
    write_snapshot(tmp_path, documents)
    snapshot = Snapshot(tmp_path)
    checked = 0
    for filters in _filters():
        expected = _haystack(filters, documents)
        if isinstance(expected, type):
            with pytest.raises(expected):
                snapshot.mask(filters)
        else:
            got = snapshot.mask(filters)
            assert got.dtype == bool and (got == expected).all(), filters
            checked += 1
    assert checked > 500  # most filters are valid ones, each compared on all 400 documents


def test_malformed_filters_raise_haystacks_errors(tmp_path):
    write_snapshot(tmp_path, _documents(5))
    snapshot = Snapshot(tmp_path)
    for bad in ({"operator": "XOR", "conditions": []}, {"conditions": []}, {"operator": "AND"},
                {"field": "meta.year", "operator": "~", "value": 1}, {"field": "meta.year", "value": 1},
                {"field": "meta.year", "operator": "in", "value": 1999}):
        with pytest.raises(FilterError):
            snapshot.mask(bad)


def test_the_table_layers_changes_over_the_snapshot(tmp_path):
    documents = _documents(50)
    write_snapshot(tmp_path, documents)
    table = DocumentTable(Snapshot(tmp_path))
    table["d3"] = Document(id="d3", content="replaced", meta={"year": 1999})
    table["new"] = Document(id="new", content="added", meta={"year": 1999})
    assert table.pop("d4") is True and table.pop("nope") is None
    assert len(table) == 50 and "d4" not in table and "new" in table and table["d3"].content == "replaced"
    assert [doc.id for doc in table.values()] == [f"d{i}" for i in range(50) if i not in (3, 4)] + ["d3", "new"]
    filters = {"field": "meta.year", "operator": "==", "value": 1999}
    expected = [doc.id for doc in table.values() if document_matches_filter(filters, doc)]
    assert [doc.id for doc in table.matching(filters)] == expected and "d3" in expected and "new" in expected
    assert table.get_many(["new", "d0", "d3"])[1] == documents[0]
    with pytest.raises(KeyError):
        table.get_many(["d4"])


def test_opening_reads_no_document_and_a_search_reads_only_its_hits(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(_documents(2000))
    decoded = []
    original = document_table._decode
    monkeypatch.setattr(document_table, "_decode",
                        lambda lines, *rest: decoded.append(len(lines)) or original(lines, *rest))
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    assert decoded == [] and store.count_documents() == 2000
    hits = store.bm25_retrieval("boundary layer shock", top_k=5)
    assert len(hits) == 5 and decoded == [5]
    filtered = store.bm25_retrieval("wing", top_k=3, filters={"field": "meta.year", "operator": "==", "value": 2000})
    assert len(filtered) == 3 and all(doc.meta["year"] == 2000 for doc in filtered) and decoded == [5, 3]


def test_stream_to_equals_a_store_written_in_memory_and_the_last_of_a_repeated_id_wins(tmp_path):
    documents = _documents(500, seed=2)
    again = [Document(id="d7", content="boundary boundary layer replaced", meta={"year": 1999})]
    streamed = EmbeddedBM25DocumentStore()
    (tmp_path / "streamed").mkdir()
    assert streamed.stream_to(tmp_path / "streamed", iter(documents + again)) == 500
    assert streamed.count_documents() == 0  # the store itself is left as it was
    in_memory = EmbeddedBM25DocumentStore()
    in_memory.write_documents(documents[:7] + again + documents[8:])
    in_memory.save(tmp_path / "memory")
    one, two = EmbeddedBM25DocumentStore(index_dir=tmp_path / "streamed"), EmbeddedBM25DocumentStore(
        index_dir=tmp_path / "memory")
    assert one.get_documents(["d7"])[0].content == "boundary boundary layer replaced"
    for query in ["boundary layer", "shock wave nozzle", "jet noise plate", "cone"]:
        ours, theirs = one.search_ids([query], top_k=1000)[0], two.search_ids([query], top_k=1000)[0]  # ties: all
        assert {d: pytest.approx(s) for d, s in ours} == {d: pytest.approx(s) for d, s in theirs}
    assert not any(path.name.startswith("tmp") for path in (tmp_path / "streamed").iterdir())


def test_large_files_are_checked_in_the_background_and_damage_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(_documents(300))
    target = folder / index_folder.DOCUMENTS_FILE
    data = bytearray(target.read_bytes())
    position = data.index(b"d150")
    data[position : position + 4] = b"d15X"  # same size: only the sha256 tells
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFolderError, match="content differs"):
        EmbeddedBM25DocumentStore(index_dir=folder)  # small files: checked before opening
    monkeypatch.setattr(index_folder, "VERIFY_AT_OPEN_BYTES", 0)
    store = EmbeddedBM25DocumentStore(index_dir=folder)  # opened at once; the check runs meanwhile
    check = store._documents.snapshot.background_check
    assert check is not None and check.done.wait(10)
    with pytest.raises(IndexFolderError) as refused:
        store.bm25_retrieval("wing")
    assert str(target) in str(refused.value) and "\n" not in str(refused.value)


def test_an_undamaged_folder_passes_the_background_check(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(_documents(100))
    monkeypatch.setattr(index_folder, "VERIFY_AT_OPEN_BYTES", 0)
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    assert store._documents.snapshot.background_check.done.wait(10)
    assert len(store.bm25_retrieval("wing", top_k=3)) == 3


def test_an_older_folder_with_documents_jsonl_still_opens(tmp_path):
    folder = tmp_path / "index"
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents(_documents(30))
    expected = store.search_ids(["boundary layer"], top_k=5)
    for name in document_table.SNAPSHOT_FILES:
        (folder / name).unlink()
    (folder / index_folder.DOCUMENTS_FILE).write_text(
        "".join(json.dumps(index_folder.document_row(doc)) + "\n" for doc in _documents(30)), encoding="utf-8")
    settings = index_folder.read_settings(folder)
    settings.pop("files")  # a folder from before manifests
    index_folder.write_settings(folder, settings)
    reopened = EmbeddedBM25DocumentStore(index_dir=Path(folder))
    assert reopened.count_documents() == 30 and reopened.search_ids(["boundary layer"], top_k=5) == expected


def test_a_filtered_search_ranks_the_matching_documents_as_the_unfiltered_one_does(tmp_path):
    folder = tmp_path / "index"
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents(_documents(600, seed=3))
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents([Document(id="late", content="shock wave boundary layer", meta={"year": 2000})])  # delta
    store.delete_documents(["d5", "d6"])  # masked rows
    for filters in ({"field": "meta.year", "operator": "==", "value": 2000},
                    {"field": "meta.name", "operator": "in", "value": ["x", "z"]}):
        matching = {doc.id for doc in store.filter_documents(filters)}
        for query in ("shock wave", "boundary layer nozzle", "cone"):
            everything = store.search_ids([query], top_k=1000)[0]
            expected = [(doc_id, score) for doc_id, score in everything if doc_id in matching]
            got = store.search_ids([query], top_k=7, filters=filters)[0]
            assert len(got) == min(7, len(expected)) and got[0][1] == pytest.approx(expected[0][1])
            assert [score for _, score in got] == pytest.approx([score for _, score in expected[:7]])
            assert all(doc_id in matching for doc_id, _ in got) and "d5" not in dict(got)


def test_damaged_snapshot_files_are_named(tmp_path):
    write_snapshot(tmp_path, _documents(20))
    lines = (tmp_path / index_folder.DOCUMENTS_FILE).read_bytes().splitlines(keepends=True)
    lines[4] = b"[1, 2, 3]".ljust(len(lines[4]) - 1) + b"\n"  # same size, not a document
    (tmp_path / index_folder.DOCUMENTS_FILE).write_bytes(b"".join(lines))
    snapshot = Snapshot(tmp_path)
    assert snapshot.documents([3])[0].id == "d3"
    with pytest.raises(IndexFolderError, match=r"documents\.jsonl:5: not a stored document"):
        snapshot.documents([4])
    offsets = np.load(tmp_path / document_table.OFFSETS_FILE)
    np.save(tmp_path / document_table.OFFSETS_FILE, offsets[::-1].copy())
    with pytest.raises(IndexFolderError, match=r"documents\.offsets\.npy: not the line offsets"):
        Snapshot(tmp_path)
    (tmp_path / document_table.IDS_ARROW).write_bytes(b"not arrow")
    np.save(tmp_path / document_table.OFFSETS_FILE, offsets)
    with pytest.raises(IndexFolderError, match=r"documents\.ids\.arrow: not a readable Arrow file"):
        Snapshot(tmp_path)
