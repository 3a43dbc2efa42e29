"""BEIR folder loading: clear errors for a missing split, an unknown document, an empty query set."""

from __future__ import annotations

import pytest

from rerank_pipeline.datasets import DatasetError, load_beir
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset


def test_missing_split_names_the_available_ones(tmp_path):
    root = write_beir_folder(tmp_path / "c", make_dataset(seed=8), split="train")
    with pytest.raises(DatasetError, match=r"split 'test' not found.*\['train'\]"):
        load_beir(root, "test")


def test_qrels_naming_unknown_document(tmp_path):
    dataset = make_dataset(seed=9)
    dataset.qrels["q1"]["ghost"] = 1
    root = write_beir_folder(tmp_path / "c", dataset)
    with pytest.raises(DatasetError, match="'ghost'"):
        load_beir(root, "test")


def test_empty_query_set(tmp_path):
    dataset = make_dataset(seed=10)
    dataset.qrels = {}
    root = write_beir_folder(tmp_path / "c", dataset)
    with pytest.raises(DatasetError, match="no judged queries"):
        load_beir(root, "test")


def test_cranfield_test_split(cranfield_dir):
    dataset = load_beir(cranfield_dir, "test")
    assert len(dataset.judged_queries()) == 100 and len(dataset.corpus) == 1400


def test_qrels_with_a_misspelt_header_or_bad_score_name_file_and_line(tmp_path):
    from rerank_pipeline.datasets import load_qrels

    misspelt = tmp_path / "misspelt.tsv"
    misspelt.write_text("query_id\tcorpus_id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"misspelt\.tsv:1: score 'score' is not a number"):
        load_qrels(misspelt)
    headerless = tmp_path / "headerless.tsv"
    headerless.write_text("q1\td1\t1\nq1\td2\tx\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"headerless\.tsv:2: score 'x'"):
        load_qrels(headerless)
    good = tmp_path / "good.tsv"
    good.write_text("q1\td1\t2\nq2\td3\t1.0\n", encoding="utf-8")
    assert load_qrels(good) == {"q1": {"d1": 2}, "q2": {"d3": 1}}


def test_a_query_line_without_text_is_a_dataset_error(tmp_path):
    from rerank_pipeline.datasets import DatasetError, load_beir

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "a wing"}\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "query": "wing"}\n', encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="'_id' and 'text'"):
        load_beir(tmp_path, "test")
