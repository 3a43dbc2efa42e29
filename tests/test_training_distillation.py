"""Distillation warm start: soft labels from the first stage, when it runs, and that a resumed run skips it."""

from __future__ import annotations

import pytest
from test_training import tiny_config, toy_collection

from rerank_pipeline.training import TrainingConfig, train_reranker
from rerank_pipeline.training.distillation import (
    build_distillation_pairs,
    distilled_model_dir,
    teacher_labels,
)
from rerank_pipeline.training.trainer import wants_distillation


def test_teacher_labels_average_each_retrievers_normalised_scores():
    bm25 = [("a", 10.0), ("b", 5.0), ("c", 0.0)]
    dense = [("b", 0.9), ("a", 0.2)]  # "c" not returned: gets the lowest returned score, 0.2
    labels = teacher_labels(["a", "b", "c"], [bm25, dense])
    # bm25 -> [1, .5, 0]; dense -> [0, 1, 0]; mean [.5, .75, 0]; normalised again
    assert labels == pytest.approx([2 / 3, 1.0, 0.0])
    assert teacher_labels(["a", "b"], [[("a", 1.0), ("b", 1.0)]]) == [0.0, 0.0]
    assert teacher_labels([], [bm25]) == []


def test_distillation_pairs_are_the_top_candidates_plus_distinct_random_documents():
    doc_ids = [f"d{i}" for i in range(20)]
    fused = {"q1": [(f"d{i}", 1.0 / (i + 1)) for i in range(10)], "q2": [(f"d{i}", 1.0 / (i + 1)) for i in range(10, 20)]}
    per_retriever = [fused]
    queries = {"q1": "first query", "q2": "second query"}
    pairs = build_distillation_pairs(queries, fused, per_retriever, lambda doc_id: f"text {doc_id}", doc_ids,
                                     depth=3, num_random=2, seed=7)
    assert len(pairs) == 10 and pairs.self_supervised_pairs == 10
    for query_id, top in (("q1", ["d0", "d1", "d2"]), ("q2", ["d10", "d11", "d12"])):
        rows = [index for index, group in enumerate(pairs.groups) if group == query_id]
        documents = [pairs.documents[index].removeprefix("text ") for index in rows]
        assert documents[:3] == top
        assert len(set(documents)) == 5 and not set(documents[3:]) & set(top)
        labels = [pairs.labels[index] for index in rows]
        assert labels[0] == 1.0 and all(0.0 <= label <= 1.0 for label in labels)
        assert labels[0] > labels[1] > labels[2]
    again = build_distillation_pairs(queries, fused, per_retriever, lambda doc_id: f"text {doc_id}", doc_ids,
                                     depth=3, num_random=2, seed=7)
    assert again.documents == pairs.documents


@pytest.fixture(scope="module")
def tiny_plain_encoder(tmp_path_factory):
    """A tiny BERT encoder saved without a classification head (like a bi-encoder's transformer)."""
    from tiny_models import make_tiny_bert_encoder

    return make_tiny_bert_encoder(tmp_path_factory.mktemp("tiny-plain-encoder"))


def test_auto_distils_a_plain_encoder_but_not_a_trained_cross_encoder(tiny_plain_encoder, tiny_bert):
    from sentence_transformers.cross_encoder import CrossEncoder

    plain = CrossEncoder(str(tiny_plain_encoder), num_labels=1, device="cpu")
    cross = CrossEncoder(str(tiny_bert), num_labels=1, device="cpu")
    auto = TrainingConfig(base_model="x")
    assert wants_distillation(auto, plain) and not wants_distillation(auto, cross)
    assert wants_distillation(TrainingConfig(base_model="x", distillation="on"), cross)
    assert not wants_distillation(TrainingConfig(base_model="x", distillation="off"), plain)
    with pytest.raises(ValueError, match="distillation"):
        TrainingConfig(base_model="x", distillation="sometimes")


def test_a_plain_encoder_is_distilled_first_and_a_resumed_run_skips_that_stage(tiny_plain_encoder, tmp_path):
    dataset = toy_collection()
    config = tiny_config(tiny_plain_encoder, self_supervised_pairs=0, distillation_queries=5, distillation_depth=4,
                         distillation_random_documents=2)
    output = tmp_path / "model"
    result = train_reranker(dataset, output, config, show_progress=False, keep_checkpoints=True, max_steps=2)
    distillation_queries = len(result.train_queries) + 5
    assert result.pair_counts["distillation_queries"] == distillation_queries
    assert result.pair_counts["distillation_pairs"] == distillation_queries * (4 + 2)
    assert (distilled_model_dir(output) / "config.json").is_file()

    resumed = train_reranker(dataset, output, config, show_progress=False, resume=True, max_steps=2)
    assert "distillation_pairs" not in resumed.pair_counts  # loaded from output/distilled, not trained again
    assert not distilled_model_dir(output).exists() and (output / "config.json").is_file()
