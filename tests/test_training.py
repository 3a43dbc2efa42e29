"""The training component end to end with tiny offline models: train, select, save, load, resume."""

from __future__ import annotations

import json
from dataclasses import replace
import random

import numpy as np
import pytest
import torch

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.training import CandidateSource, OutputExistsError, TrainingConfig, train_reranker
from rerank_pipeline.training.trainer import build_training_arguments, last_checkpoint, precision_flags

TOPICS = [
    ("shock", "wave"), ("boundary", "layer"), ("heat", "transfer"), ("mach", "number"), ("laminar", "flow"),
    ("wing", "aircraft"), ("pressure", "surface"), ("velocity", "temperature"), ("supersonic", "body"),
    ("turbulent", "plate"), ("hypersonic", "theory"), ("subsonic", "experimental"),
]
FILLER = "the of a and in to is for on with by at from results".split()


def toy_collection(docs_per_topic: int = 4, distractors: int = 40, filler_words: int = 12, seed: int = 0) -> RetrievalDataset:
    """Documents about one topic (two words repeated among filler); a query names a topic; its documents are
    relevant. Distractor documents hold filler only, so "the query's words are in the document" is learnable."""
    rng = random.Random(seed)
    corpus, queries, qrels = {}, {}, {}
    for index in range(distractors):
        corpus[f"x{index}"] = {"title": "", "text": " ".join(rng.choice(FILLER) for _ in range(16))}
    for topic_index, words in enumerate(TOPICS):
        queries[f"q{topic_index}"] = f"{words[0]} {words[1]}"
        for copy in range(docs_per_topic):
            body = [rng.choice(FILLER) for _ in range(filler_words)] + list(words) * 2
            rng.shuffle(body)
            doc_id = f"t{topic_index}d{copy}"
            corpus[doc_id] = {"title": f"on {words[0]} {words[1]} results", "text": " ".join(body)}
            qrels.setdefault(f"q{topic_index}", {})[doc_id] = 1 + copy % 2
    return RetrievalDataset(name="toy", corpus=corpus, queries=queries, qrels=qrels)


def shuffled_rankings(dataset: RetrievalDataset, seed: int = 0) -> dict[str, list[tuple[str, float]]]:
    """A weak first stage: every document in a random order (positives are not favoured)."""
    rng = random.Random(seed)
    rankings = {}
    for qid in dataset.queries:
        doc_ids = list(dataset.corpus)
        rng.shuffle(doc_ids)
        rankings[qid] = [(doc_id, float(len(doc_ids) - rank)) for rank, doc_id in enumerate(doc_ids)]
    return rankings


def make_tiny_bert_with_words(folder):
    """A tiny BERT cross-encoder whose tokenizer knows the toy words (``tiny_bert``'s maps every word to [UNK])."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from tiny_models import write_vocab

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_words(tmp_path_factory):
    """A tiny BERT cross-encoder that tokenizes the toy words."""
    return make_tiny_bert_with_words(tmp_path_factory.mktemp("tiny-bert-words"))


def distractors_first(dataset: RetrievalDataset, seed: int = 0) -> dict[str, list[tuple[str, float]]]:
    """A first stage that ranks the filler-only distractors on top, so mined negatives are distractors."""
    rankings = shuffled_rankings(dataset, seed)
    return {qid: sorted(ranking, key=lambda item: not item[0].startswith("x")) for qid, ranking in rankings.items()}


def tiny_config(model_dir, **changes) -> TrainingConfig:
    settings = dict(
        base_model=str(model_dir), first_stage="bm25", num_epochs=1, learning_rate=5e-4, batch_size=8, max_length=32,
        num_negatives=4, negative_rank_range=(1, 30), self_supervised_pairs=4, min_dev_queries=3, dev_fraction=0.25,
        dev_rerank_depth=10, rerank_fusion_depth=20, warmup_ratio=0.0,
    )
    settings.update(changes)
    return TrainingConfig(**settings)


def test_training_runs_with_our_bm25_and_the_model_loads_in_ranker_and_sentence_transformers(tiny_bert_words, tmp_path):
    from haystack import Document
    from sentence_transformers.cross_encoder import CrossEncoder

    from rerank_pipeline.components import CrossEncoderRanker
    from rerank_pipeline.components.score_fusion import RerankerScoreFusion

    dataset = toy_collection()
    output = tmp_path / "model"
    result = train_reranker(dataset, output, tiny_config(tiny_bert_words), show_progress=False, max_steps=6)
    assert result.pair_counts["self_supervised_pairs"] > 0 and result.pair_counts["judged_pairs"] > 0
    assert not set(result.dev_queries) & set(result.train_queries)
    assert set(result.dev_fusion_curve) == {round(w / 10, 1) for w in range(11)}
    assert result.dev_fusion_curve[result.tuned_fusion_weight]["ndcg@10"] == max(m["ndcg@10"] for m in result.dev_fusion_curve.values())
    # the guard serves the tuned weight only when the paired test on dev finds the fused ranking better
    assert result.fusion_weight in (0.0, result.tuned_fusion_weight)
    assert (result.fusion_weight == result.tuned_fusion_weight) == (
        result.tuned_fusion_weight != 0.0 and result.guard.fused_test.delta > 0 and result.guard.fused_test.significant(0.05))
    fusion = json.loads((output / "fusion.json").read_text())
    assert fusion["weight"] == result.fusion_weight and fusion["guard"]["tuned_weight"] == result.tuned_fusion_weight
    assert fusion["collection"] == dataset.name
    assert json.loads((output / "training_config.json").read_text())["num_negatives"] == 4

    pairs = [("shock wave", dataset.corpus["t0d0"]["text"]), ("shock wave", dataset.corpus["t3d1"]["text"])]
    expected = CrossEncoder(str(output), device="cpu").predict(pairs)
    ranker = CrossEncoderRanker(str(output), device="cpu")
    assert np.allclose(ranker.predict(pairs), expected, atol=1e-5)
    documents = [Document(id=doc_id, content=dataset.corpus[doc_id]["text"], score=1.0 / (i + 1)) for i, doc_id in enumerate(["t0d0", "t3d1"])]
    ranked = ranker.run(query="shock wave", documents=documents)["documents"]
    fused = RerankerScoreFusion.from_model_folder(output).run(documents=ranked, first_stage_documents=documents)["documents"]
    assert {document.id for document in fused} == {"t0d0", "t3d1"}
    assert all("reranker_score" in document.meta for document in fused)


def test_loss_falls_on_a_learnable_toy_task(tiny_bert_words, tmp_path):
    # Negatives are filler-only distractors, positives hold the topic words: learnable from the document alone.
    dataset = toy_collection(docs_per_topic=3, filler_words=2)
    candidates = CandidateSource.from_rankings(distractors_first(dataset))
    config = tiny_config(
        tiny_bert_words, num_epochs=8, num_negatives=3, num_random_negatives=0, self_supervised_pairs=0, learning_rate=1e-2,
        graded_labels=False, evaluations_per_epoch=1, dev_rerank_depth=5, rerank_fusion_depth=10,
    )
    result = train_reranker(dataset, tmp_path / "model", config, candidates=candidates, show_progress=False)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) >= 6
    quarter = len(losses) // 4
    assert np.mean(losses[-quarter:]) < 0.7 * np.mean(losses[:quarter])


def test_checkpoint_saves_and_training_resumes(tiny_bert_words, tmp_path):
    dataset = toy_collection()
    candidates = CandidateSource.from_rankings(shuffled_rankings(dataset))
    output = tmp_path / "model"
    config = tiny_config(tiny_bert_words, num_epochs=3, self_supervised_pairs=0)
    first = train_reranker(dataset, output, config, candidates=candidates, show_progress=False, keep_checkpoints=True, max_steps=4)
    checkpoint = last_checkpoint(output)
    assert checkpoint is not None and (output / "checkpoints").is_dir()
    saved_step = int(checkpoint.rsplit("-", 1)[-1])
    assert 0 < saved_step <= 4 and first.log_history[-1]["step"] == 4
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train_reranker(dataset, output, config, candidates=candidates, show_progress=False, max_steps=4)
    resumed = train_reranker(dataset, output, config, candidates=candidates, resume=True, show_progress=False, max_steps=8)
    steps = [entry["step"] for entry in resumed.log_history if "loss" in entry]
    assert resumed.log_history[-1]["step"] == 8
    assert not (output / "checkpoints").exists()  # removed once the finished model is saved
    assert steps and min(steps) <= saved_step  # the history before the checkpoint came back with it


def test_only_rank_zero_checks_and_clears_the_output_folder(tmp_path, monkeypatch):
    from rerank_pipeline.training.trainer import is_main_process, prepare_output_dir

    output = tmp_path / "model"
    output.mkdir()
    (output / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        prepare_output_dir(output)
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    assert prepare_output_dir(output, overwrite=True) == output and (output / "keep.txt").exists()
    monkeypatch.setenv("RANK", "0")
    prepare_output_dir(output, overwrite=True)
    assert not (output / "keep.txt").exists()


def test_training_arguments_plumbing_for_gpus_and_multiple_processes(tmp_path):
    config = TrainingConfig(base_model="x", batch_size=16, evaluations_per_epoch=2, num_epochs=2)
    single = build_training_arguments(config, tmp_path, num_examples=1600, world_size=1, cuda=False, use_cpu=True)
    assert single.eval_steps == 50 and single.save_steps == 50 and not single.bf16 and not single.fp16
    assert single.load_best_model_at_end and single.metric_for_best_model == "eval_dev_R30_ndcg@10"
    four = build_training_arguments(config, tmp_path, num_examples=1600, world_size=4, cuda=False, use_cpu=True)
    assert four.eval_steps == 12  # 100 optimizer steps an epoch split over 4 processes
    assert precision_flags("auto", cuda=True, bf16_supported=True) == {"bf16": True, "fp16": False, "use_cpu": False}
    assert precision_flags("auto", cuda=True, bf16_supported=False)["fp16"]
    assert precision_flags("auto", cuda=False) == {"bf16": False, "fp16": False, "use_cpu": True}
    with pytest.raises(ValueError, match="needs a GPU"):
        precision_flags("bf16", cuda=False)


def test_listwise_lambda_loss_option_trains(tiny_bert_words, tmp_path):
    dataset = toy_collection()
    candidates = CandidateSource.from_rankings(shuffled_rankings(dataset))
    config = tiny_config(tiny_bert_words, loss="lambda", batch_size=2, self_supervised_pairs=0, evaluations_per_epoch=1)
    result = train_reranker(dataset, tmp_path / "model", config, candidates=candidates, show_progress=False, max_steps=3)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert losses and all(np.isfinite(losses))
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_training_twice_gives_bit_identical_weights_and_another_seed_does_not(tiny_bert_words, tmp_path):
    from safetensors.torch import load_file

    dataset = toy_collection()
    config = tiny_config(tiny_bert_words, distillation="on", distillation_queries=6, distillation_depth=4)
    weights = []
    for run, seed in (("a", 42), ("b", 42), ("c", 7)):
        output = tmp_path / run
        train_reranker(dataset, output, replace(config, seed=seed), show_progress=False, max_steps=3)
        weights.append(load_file(str(output / "model.safetensors")))
    first, second, other_seed = weights
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)  # bit for bit
    assert not all(torch.equal(first[name], other_seed[name]) for name in first)
    summary = [json.loads((tmp_path / run / "training_summary.json").read_text()) for run in ("a", "b")]
    assert summary[0]["loss_history"] == summary[1]["loss_history"] and summary[0]["dev_fusion_curve"] == summary[1]["dev_fusion_curve"]
