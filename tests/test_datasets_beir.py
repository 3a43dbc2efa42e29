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
