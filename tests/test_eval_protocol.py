"""The R-k protocol equals sentence-transformers' CrossEncoderRerankingEvaluator / CrossEncoderNanoBEIREvaluator."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sentence_transformers import CrossEncoder
from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval import IdentityScorer, RerankingEvaluator, rerank_protocol, rerank_protocol_suite
from rerank_pipeline.eval.protocol import build_samples

WORDS = (
    "flow wing boundary layer pressure heat transfer shock wave mach number supersonic hypersonic subsonic "
    "laminar turbulent velocity temperature theory experimental results aircraft body plate surface"
).split()


def make_dataset(name: str = "toy", seed: int = 0, n_docs: int = 60, n_queries: int = 8, depth: int = 20) -> RetrievalDataset:
    """A random collection with distinct texts; published rankings of ``depth`` documents that miss some
    positives, and one query whose positives are never retrieved."""
    rng = random.Random(seed)
    corpus = {
        f"d{i}": {"title": "", "text": " ".join(rng.choices(WORDS, k=rng.randint(6, 20))) + f" {i}"}
        for i in range(n_docs)
    }
    doc_ids = list(corpus)
    queries, qrels, rankings = {}, {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        queries[qid] = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        positives = rng.sample(doc_ids, rng.randint(1, 4))
        qrels[qid] = {doc_id: rng.randint(1, 3) for doc_id in positives}
        others = [d for d in doc_ids if d not in positives]
        ranked = rng.sample(others, depth)
        if q != 0:  # query q0 retrieves no positive at all
            for doc_id in positives[: max(1, len(positives) - 1)]:  # the last positive stays unretrieved
                ranked.insert(rng.randrange(0, depth), doc_id)
        rankings[qid] = ranked[:depth]
    queries["q_unjudged"] = "flow"  # no qrels: not evaluated
    return RetrievalDataset(name=name, corpus=corpus, queries=queries, qrels=qrels, rankings=rankings)


def st_samples(dataset: RetrievalDataset, rerank_k: int) -> list[dict]:
    """Samples built the way CrossEncoderNanoBEIREvaluator builds them (texts)."""
    return [
        {
            "query": dataset.queries[qid],
            "positive": [dataset.document_text(d) for d in dataset.positives(qid)],
            "documents": [dataset.document_text(d) for d in dataset.rankings[qid][:rerank_k]],
        }
        for qid in dataset.judged_queries()
    ]


def assert_same_metrics(ours: dict[str, float], theirs: dict[str, float], tolerance: float = 1e-6) -> None:
    assert set(ours) == set(theirs), f"keys differ: {sorted(set(ours) ^ set(theirs))}"
    drifted = {key: (ours[key], float(theirs[key])) for key in theirs if abs(ours[key] - float(theirs[key])) > tolerance}
    assert not drifted, f"metrics drifted: {drifted}"


@pytest.fixture(scope="module")
def tiny_cross_encoder(tiny_bert):
    return CrossEncoder(str(tiny_bert), device="cpu")


@pytest.mark.parametrize("always_rerank_positives", [True, False])
def test_protocol_equals_sentence_transformers(tiny_cross_encoder, always_rerank_positives):
    dataset = make_dataset()
    rerank_k = 12
    theirs = CrossEncoderRerankingEvaluator(
        st_samples(dataset, rerank_k), at_k=10, always_rerank_positives=always_rerank_positives,
        name=f"toy_R{rerank_k}", batch_size=16, write_csv=False,
    )(tiny_cross_encoder)
    ours = rerank_protocol(
        dataset, None, tiny_cross_encoder, rerank_k=rerank_k, always_rerank_positives=always_rerank_positives, batch_size=16
    )
    assert_same_metrics(ours.prefixed(), theirs)
    # the comparison is not vacuous: the model moved the metrics, and the two settings differ
    assert ours.metrics["ndcg@10"] != ours.metrics["base_ndcg@10"]
    assert 0 < ours.metrics["map"] < 1
    assert ours.stats["queries"] == 8


def test_positive_setting_changes_the_numbers(tiny_cross_encoder):
    dataset = make_dataset()
    always = rerank_protocol(dataset, None, tiny_cross_encoder, rerank_k=12, always_rerank_positives=True)
    retrieved = rerank_protocol(dataset, None, tiny_cross_encoder, rerank_k=12, always_rerank_positives=False)
    assert always.metrics["base_ndcg@10"] == retrieved.metrics["base_ndcg@10"]
    assert always.metrics["ndcg@10"] > retrieved.metrics["ndcg@10"]
    assert always.per_query["q0"]["ndcg@10"] > 0 and retrieved.per_query["q0"]["ndcg@10"] == 0


def test_drifted_metric_fails_the_parity_check(tiny_cross_encoder):
    dataset = make_dataset()
    theirs = CrossEncoderRerankingEvaluator(st_samples(dataset, 12), name="toy_R12", write_csv=False)(tiny_cross_encoder)
    ours = rerank_protocol(dataset, None, tiny_cross_encoder, rerank_k=12).prefixed()
    ours["toy_R12_mrr@10"] += 1e-5
    with pytest.raises(AssertionError, match="drifted"):
        assert_same_metrics(ours, theirs)
    # a different cut-off is caught as well
    shallow = rerank_protocol(dataset, None, tiny_cross_encoder, rerank_k=12, at_k=5).prefixed()
    with pytest.raises(AssertionError, match="keys differ"):
        assert_same_metrics(shallow, theirs)


def test_identity_scorer_reproduces_the_first_stage_order():
    """With all positives reranked, the identity scorer gives back the base metrics (the first-stage order with
    unretrieved positives appended) on every query that retrieved a positive; base counts the others as 0."""
    dataset = make_dataset()
    result = rerank_protocol(dataset, None, IdentityScorer(), rerank_k=20, always_rerank_positives=True)
    for qid, row in result.per_query.items():
        for metric in ("map", "mrr@10", "ndcg@10"):
            if qid == "q0":
                assert row["base_" + metric] == 0 and row["map"] > 0  # positives appended below rank 20
            else:
                assert row[metric] == pytest.approx(row["base_" + metric], abs=1e-12), (qid, metric)
    retrieved_only = rerank_protocol(dataset, None, IdentityScorer(), rerank_k=20, always_rerank_positives=False)
    assert retrieved_only.metrics["mrr@10"] == pytest.approx(retrieved_only.metrics["base_mrr@10"], abs=1e-12)
    for qid, ranked in retrieved_only.reranked.items():
        assert [doc_id for doc_id, _ in ranked] == ([] if qid == "q0" else dataset.rankings[qid][:20])


def test_identity_with_all_positives_puts_unretrieved_positives_last():
    dataset = make_dataset()
    result = rerank_protocol(dataset, None, IdentityScorer(), rerank_k=20, always_rerank_positives=True)
    for qid, ranked in result.reranked.items():
        retrieved = dataset.rankings[qid][:20]
        missing = [d for d in dataset.positives(qid) if d not in retrieved]
        assert [doc_id for doc_id, _ in ranked] == retrieved + missing


def test_rankings_override_and_accept_scored_pairs(tiny_cross_encoder):
    dataset = make_dataset()
    as_pairs = {qid: [(doc_id, 1.0 / (rank + 1)) for rank, doc_id in enumerate(ids)] for qid, ids in dataset.rankings.items()}
    from_pairs = rerank_protocol(dataset, as_pairs, tiny_cross_encoder, rerank_k=12)
    published = rerank_protocol(dataset, None, tiny_cross_encoder, rerank_k=12)
    assert from_pairs.metrics == published.metrics


def test_bad_rankings_raise_clear_errors():
    dataset = make_dataset()
    with pytest.raises(ValueError, match="no first-stage ranking"):
        build_samples(dataset, {"q1": ["d1"]})
    broken = dict(dataset.rankings, q1=["d1", "nope"])
    with pytest.raises(ValueError, match="unknown documents"):
        build_samples(dataset, broken)
    with pytest.raises(ValueError, match="rerank_k"):
        build_samples(dataset, None, rerank_k=0)


def test_suite_keys_and_means_match_nanobeir_naming(tiny_cross_encoder):
    first, second = make_dataset("NanoA", seed=1), make_dataset("NanoB", seed=2)
    suite = rerank_protocol_suite([(first, None), (second, None)], tiny_cross_encoder, rerank_k=12)
    flat = suite.flat()
    assert flat["NanoBEIR_R12_mean_ndcg@10"] == pytest.approx((flat["NanoA_R12_ndcg@10"] + flat["NanoB_R12_ndcg@10"]) / 2)
    assert flat["NanoBEIR_R12_mean_base_map"] == pytest.approx((flat["NanoA_R12_base_map"] + flat["NanoB_R12_base_map"]) / 2)
    card = suite.model_card()["ndcg@10"]
    value, gain = card.split(" ")
    assert float(value) == pytest.approx(flat["NanoBEIR_R12_mean_ndcg@10"], abs=5e-5)
    assert float(gain.strip("()")) == pytest.approx(flat["NanoBEIR_R12_mean_ndcg@10"] - flat["NanoBEIR_R12_mean_base_ndcg@10"], abs=5e-5)


def test_evaluator_plugs_into_sentence_transformers(tiny_cross_encoder, tmp_path):
    dataset = make_dataset()
    evaluator = RerankingEvaluator(dataset, dataset.rankings, rerank_k=12, name="dev", batch_size=16)
    metrics = evaluator(tiny_cross_encoder, output_path=str(tmp_path), epoch=1, steps=5)
    assert evaluator.primary_metric == "dev_R12_ndcg@10"
    assert set(metrics) == {f"dev_R12_{m}" for m in ("map", "mrr@10", "ndcg@10", "base_map", "base_mrr@10", "base_ndcg@10")}
    theirs = CrossEncoderRerankingEvaluator(st_samples(dataset, 12), name="dev_R12", batch_size=16, write_csv=False)(tiny_cross_encoder)
    assert_same_metrics(metrics, theirs)
    csv_lines = (tmp_path / evaluator.csv_file).read_text().splitlines()
    assert csv_lines[0].startswith("epoch,steps,MAP") and csv_lines[1].startswith("1,5,")
    suite = RerankingEvaluator([(make_dataset("NanoA", 1), None), (make_dataset("NanoB", 2), None)], rerank_k=12)
    suite_metrics = suite(tiny_cross_encoder)
    assert suite.primary_metric == "NanoBEIR_R12_mean_ndcg@10" and suite.primary_metric in suite_metrics


def test_scores_follow_the_scorer():
    """A scorer that ranks every positive first gets perfect reranked metrics."""
    dataset = make_dataset()

    class Oracle:
        def predict(self, pairs, batch_size=None, show_progress_bar=False):
            positive = {(dataset.queries[q], dataset.document_text(d)) for q in dataset.qrels for d in dataset.positives(q)}
            return np.array([1.0 if pair in positive else 0.0 for pair in pairs]) + np.linspace(0, 1e-3, len(pairs))

    result = rerank_protocol(dataset, None, Oracle(), rerank_k=20)
    assert result.metrics["map"] == pytest.approx(1.0)
    assert result.metrics["ndcg@10"] == pytest.approx(1.0)


def test_our_cross_encoder_ranker_gives_the_same_protocol_numbers(tiny_bert, tiny_cross_encoder):
    from rerank_pipeline.eval import load_scorer

    dataset = make_dataset()
    ranker = load_scorer("cross-encoder", str(tiny_bert), batch_size=16, device="cpu")
    assert type(ranker).__name__ == "CrossEncoderRanker"
    theirs = CrossEncoderRerankingEvaluator(st_samples(dataset, 12), name="toy_R12", batch_size=16, write_csv=False)(tiny_cross_encoder)
    ours = rerank_protocol(dataset, None, ranker, rerank_k=12, batch_size=16)
    assert_same_metrics(ours.prefixed(), theirs)


def test_single_document_lists_do_not_crash():
    """rerank_k=1 (allowed) leaves one document per query when its only positive is ranked first; sklearn's
    ndcg_score refuses one-document lists, so the protocol scores them itself."""
    corpus = {"d1": {"title": "", "text": "wing flow"}, "d2": {"title": "", "text": "heat plate"}}
    dataset = RetrievalDataset(
        name="one", corpus=corpus, queries={"q1": "wing", "q2": "heat"},
        qrels={"q1": {"d1": 1}, "q2": {"d2": 1}}, rankings={"q1": ["d1", "d2"], "q2": ["d1", "d2"]},
    )
    result = rerank_protocol(dataset, None, IdentityScorer(), rerank_k=1)
    assert result.per_query["q1"]["ndcg@10"] == 1.0 and result.per_query["q1"]["base_ndcg@10"] == 1.0
    retrieved_only = rerank_protocol(dataset, None, IdentityScorer(), rerank_k=1, always_rerank_positives=False)
    assert retrieved_only.per_query["q1"]["ndcg@10"] == 1.0 and retrieved_only.per_query["q2"]["ndcg@10"] == 0.0
