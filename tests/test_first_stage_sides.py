"""Every first-stage side declares the FirstStageSide protocol that FirstStage relies on."""

from __future__ import annotations

from rerank_pipeline.components.elasticsearch import ElasticsearchSide
from rerank_pipeline.first_stage import DenseSide, FirstStageSide, build_first_stage


def test_every_side_satisfies_the_protocol():
    bm25 = build_first_stage("bm25")
    sides = [*bm25.sides, DenseSide(store=None, model="any-model", meta_fields_to_embed=[]),
             ElasticsearchSide(store=None, settings={})]
    assert [side.name for side in sides] == ["bm25", "dense", "elasticsearch"]
    assert all(isinstance(side, FirstStageSide) for side in sides)


def test_an_object_without_the_side_methods_is_not_a_side():
    class StoreOnly:
        name = "bm25"
        store = None

    assert not isinstance(StoreOnly(), FirstStageSide)
