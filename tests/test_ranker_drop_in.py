"""CrossEncoderRanker as a drop-in for sentence-transformers-haystack's SentenceTransformersSimilarityRanker."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import torch
from haystack import Document, Pipeline
from haystack.utils import ComponentDevice, Secret
from haystack_integrations.components.rankers.sentence_transformers import SentenceTransformersSimilarityRanker

from rerank_pipeline.components import CrossEncoderRanker

THEIR_TYPE = (
    "haystack_integrations.components.rankers.sentence_transformers.sentence_transformers_similarity."
    "SentenceTransformersSimilarityRanker"
)
OUR_TYPE = "rerank_pipeline.components.ranker.CrossEncoderRanker"
QUERY = "supersonic flutter of wing panels"
DOCUMENTS = [
    Document(id="1", content="panel flutter at supersonic speed", meta={"title": "flutter"}, score=0.2),
    Document(id="2", content="heat transfer in hypersonic flow " * 20, meta={"title": ""}),  # longer than the window
    Document(id="3", content="wing boundary layer pressure", meta={"title": None}),
    Document(id="1", content="panel flutter at supersonic speed", meta={"title": "flutter", "copy": 2}, score=0.9),
    Document(id="4", content="laminar flow over a flat plate", meta={"title": "plate"}),
    Document(id="1", content="panel flutter at supersonic speed", meta={"title": "flutter"}),
]


def test_every_init_parameter_and_run_input_of_theirs_is_accepted_with_their_defaults():
    ours, theirs = inspect.signature(CrossEncoderRanker.__init__), inspect.signature(
        SentenceTransformersSimilarityRanker.__init__
    )
    for name, parameter in theirs.parameters.items():
        if name == "self":
            continue
        assert name in ours.parameters, name
        if name not in ("model", "batch_size"):  # see docs/ranker.md for these two
            assert ours.parameters[name].default == parameter.default, name
    assert ours.parameters["model"].default == "cross-encoder/ms-marco-MiniLM-L6-v2"
    run_ours = inspect.signature(CrossEncoderRanker.run).parameters
    assert set(inspect.signature(SentenceTransformersSimilarityRanker.run).parameters) <= set(run_ours)


def test_their_pipeline_yaml_with_our_type_gives_their_ranking(tiny_bert):
    theirs = SentenceTransformersSimilarityRanker(
        model=str(tiny_bert),
        device=ComponentDevice.from_str("cpu"),
        top_k=4,
        query_prefix="query: ",
        query_suffix=" ?",
        document_prefix="passage: ",
        document_suffix=" .",
        meta_fields_to_embed=["title"],
        embedding_separator=" | ",
        model_kwargs={"dtype": torch.float32},
        tokenizer_kwargs={"model_max_length": 40},
        config_kwargs={"classifier_dropout": 0.0},
    )
    pipeline = Pipeline()
    pipeline.add_component("ranker", theirs)
    yaml_text = pipeline.dumps()
    assert yaml_text.count(THEIR_TYPE) == 1
    original = Pipeline.loads(yaml_text)  # (their to_dict turns their own model_kwargs into strings in place)
    swapped = Pipeline.loads(yaml_text.replace(THEIR_TYPE, OUR_TYPE))
    ours = swapped.get_component("ranker")
    assert isinstance(ours, CrossEncoderRanker)
    assert ours.model_kwargs == {"dtype": torch.float32} and ours.token == theirs.token
    assert ours.tokenizer_kwargs == {"model_max_length": 40} and ours.config_kwargs == {"classifier_dropout": 0.0}

    for scale_score in (None, False):
        inputs = {"query": QUERY, "documents": DOCUMENTS, "scale_score": scale_score}
        expected = original.run({"ranker": inputs})["ranker"]["documents"]
        got = swapped.run({"ranker": inputs})["ranker"]["documents"]
        assert [d.id for d in got] == [d.id for d in expected]
        assert [d.meta for d in got] == [d.meta for d in expected]  # the same duplicate was kept
        assert [d.score for d in got] == pytest.approx([d.score for d in expected], abs=1e-4)
    assert swapped.dumps().count(OUR_TYPE) == 1  # and ours writes a YAML that loads again


def test_duplicates_are_removed_keeping_the_highest_incoming_score(tiny_bert):
    ranked = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu").run(QUERY, DOCUMENTS)["documents"]
    assert sorted(d.id for d in ranked) == ["1", "2", "3", "4"]
    assert next(d for d in ranked if d.id == "1").meta["copy"] == 2


def test_token_is_used_for_loading_and_never_serialized_in_clear(tiny_bert, monkeypatch):
    import sentence_transformers

    seen = {}
    original = sentence_transformers.CrossEncoder

    def recording_cross_encoder(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "CrossEncoder", recording_cross_encoder)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", token=Secret.from_token("hf_secret"))
    ranker.warm_up()
    assert seen["token"] == "hf_secret"
    with pytest.raises(ValueError, match="token"):
        ranker.to_dict()
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    env_ranker = CrossEncoderRanker(str(tiny_bert), device="cpu")
    env_ranker.warm_up()
    assert seen["token"] == "hf_from_env"
    assert env_ranker.to_dict()["init_parameters"]["token"] == {
        "type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False,
    }


def test_run_async_leaves_the_event_loop_free_while_it_reranks(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu", batch_size=1, max_batch_tokens=64)
    ranker.warm_up()
    documents = [Document(id=str(i), content=f"flutter of wing panels number {i} " * 4) for i in range(400)]

    async def rerank_while_ticking():
        ticks = 0
        task = asyncio.create_task(ranker.run_async(query=QUERY, documents=documents))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.001)
        return ticks, await task

    ticks, result = asyncio.run(rerank_while_ticking())
    assert ticks >= 10  # a blocking rerank would let the ticker run once at most
    assert result["documents"] == ranker.run(QUERY, documents)["documents"]
