"""Training data: judgements loading, dev split, hard-negative mining, self-supervised pairs."""

from __future__ import annotations

import json

import pytest

from rerank_pipeline.datasets import DatasetError
from rerank_pipeline.training import (
    build_training_pairs,
    load_judgement_file,
    load_training_collection,
    mine_hard_negatives,
    pseudo_query,
    sample_pseudo_queries,
    split_dev,
)
from rerank_pipeline.training.config import TrainingConfig


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_mined_negatives_never_include_a_positive_and_respect_the_rank_range():
    ranking = [(f"d{i}", 100.0 - i) for i in range(1, 41)]
    qrels = {"q": {"d3": 2, "d5": 1, "d7": 0, "d30": 1}}
    for seed in range(5):
        negatives = mine_hard_negatives({"q": ranking}, qrels, num_negatives=30, rank_range=(3, 20), seed=seed)["q"]
        assert not {"d3", "d5", "d30"} & set(negatives)
        assert "d7" in negatives  # gain 0 is a judged non-positive: a fine negative
        assert all(3 <= int(doc_id[1:]) <= 20 for doc_id in negatives)
        assert len(negatives) == 18 - 2  # ranks 3..20 minus the two positives among them


def test_mined_negatives_sample_the_requested_number_in_rank_order():
    ranking = [(f"d{i}", 1.0 / i) for i in range(1, 101)]
    negatives = mine_hard_negatives({"q": ranking}, {"q": {"d1": 1}}, num_negatives=5, rank_range=(2, 100), seed=3)["q"]
    assert len(negatives) == 5 == len(set(negatives))
    assert negatives == sorted(negatives, key=lambda doc_id: int(doc_id[1:]))


def test_false_negative_margin_skips_candidates_scored_like_the_best_positive():
    ranking = [("p", 10.0), ("near", 9.8), ("mid", 5.0), ("far", 1.0), ("last", 0.0)]
    kept = mine_hard_negatives({"q": ranking}, {"q": {"p": 1}}, 10, (1, 5), false_negative_margin=0.1)["q"]
    assert kept == ["mid", "far", "last"]
    unfiltered = mine_hard_negatives({"q": ranking}, {"q": {"p": 1}}, 10, (1, 5))["q"]
    assert unfiltered == ["near", "mid", "far", "last"]


def test_dev_split_is_disjoint_seeded_and_refuses_too_few_queries():
    query_ids = [f"q{i}" for i in range(40)]
    train, dev = split_dev(query_ids, dev_fraction=0.2, min_dev_queries=5, seed=1)
    assert len(dev) == 8 and len(train) == 32 and not set(train) & set(dev)
    assert split_dev(query_ids, 0.2, 5, seed=1) == (train, dev)
    with pytest.raises(DatasetError, match="too few judged queries for a dev split"):
        split_dev(query_ids[:9], dev_fraction=0.2, min_dev_queries=5)


def test_pseudo_query_cuts_the_title_off_the_positive():
    text = "shock wave boundary layer interaction . measurements of the interaction of a shock wave with a turbulent layer on a flat plate"
    made = pseudo_query("d1", "shock wave boundary layer interaction .", text)
    assert made.query == "shock wave boundary layer interaction ."
    assert made.body.startswith("measurements of the interaction")
    untitled = pseudo_query("d2", "", "Heat transfer in hypersonic flow is large. " + "We measured it on a cone at mach seven in a tunnel.")
    assert untitled.query == "Heat transfer in hypersonic flow is large." and untitled.body.startswith("We measured")
    assert pseudo_query("d3", "short", "too short") is None
    corpus = {f"d{i}": {"title": f"title words number {i}", "text": "body " * 20} for i in range(10)}
    assert len(sample_pseudo_queries(corpus, 4, seed=0)) == 4
    assert sample_pseudo_queries(corpus, 4, seed=0) == sample_pseudo_queries(corpus, 4, seed=0)


def test_training_pairs_grade_positives_and_label_negatives_zero():
    pairs = build_training_pairs(
        queries={"q": "query"}, qrels={"q": {"a": 4, "b": 2}}, negatives={"q": ["n1", "n2"]}, document_text=str.upper,
    )
    assert sorted(zip(pairs.documents, pairs.labels)) == [("A", 1.0), ("B", 0.5), ("N1", 0.0), ("N2", 0.0)]
    assert (pairs.positives, pairs.negatives, pairs.judged_pairs) == (2, 2, 4)
    listwise = pairs.listwise_dataset()
    assert listwise.num_rows == 1 and listwise[0]["labels"] == [1.0, 0.5, 0.0, 0.0]


def test_judgement_file_by_id_and_by_text(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "shock waves"}, {"_id": "d2", "title": "", "text": "heat"}])
    judgements = write_jsonl(tmp_path / "train.jsonl", [
        {"query": "what about shocks", "positive_id": "d1"},
        {"query": "what about heat", "positive": "heat"},
        {"query": "what about drag", "positive": "drag is a force"},
    ])
    dataset = load_judgement_file(judgements, corpus)
    assert len(dataset.judged_queries()) == 3
    assert dataset.positives("q2") == ["d2"]
    new_id = dataset.positives("q3")[0]
    assert dataset.corpus[new_id]["text"] == "drag is a force"
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("query,doc_id\nwhat about shocks,d1\n", encoding="utf-8")
    assert load_judgement_file(csv_path, corpus).positives("q1") == ["d1"]


def test_bad_training_input_gives_clear_errors(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "shock waves"}])
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"query": "q", "positive_id": "nope"}])
    with pytest.raises(DatasetError, match="positive document 'nope' is not in the corpus"):
        load_judgement_file(missing, corpus)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    write_jsonl(beir / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "shock waves"}])
    write_jsonl(beir / "queries.jsonl", [{"_id": "1", "text": "shocks"}])
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no query has a positive judgement"):
        load_training_collection(beir, "train")
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n1\td9\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not in the corpus"):
        load_training_collection(beir, "train")


def test_config_validates_and_round_trips():
    config = TrainingConfig(num_negatives=3, negative_rank_range=(2, 9))
    assert TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="loss"):
        TrainingConfig(loss="hinge")
    with pytest.raises(ValueError, match="negative_rank_range"):
        TrainingConfig(negative_rank_range=(10, 2))
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainingConfig.from_dict({"learning_rat": 1.0})
