"""No silent truncation: the document tokens a cross-encoder window cuts, counted exactly and reported on request."""

from __future__ import annotations

import random

import pytest
from haystack import Document
from transformers import AutoTokenizer, BertTokenizer

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker import TRUNCATED_TOKENS
from rerank_pipeline.components.ranker.passages import encode_passages
from rerank_pipeline.components.ranker.scoring import truncated_document_tokens
from tiny_models import WORDS

WINDOW = 64  # the tiny BERT's own
QUERY = "shock wave on a wing"


def words(count: int, seed: int = 0) -> str:
    """``count`` words of the tiny vocabulary, one token each."""
    generator = random.Random(seed)
    return " ".join(generator.choice(WORDS) for _ in range(count))


PAIRS = [
    (QUERY, "laminar flow on a flat plate"),  # fits: nothing cut
    (QUERY, words(200)),  # the document is cut
    (words(150, seed=1), words(300, seed=2)),  # both too long: longest_first cuts the query too
    (words(150, seed=3), "pressure"),  # only the query is cut: the document keeps all its tokens
    (QUERY, words(WINDOW - 3 - 5)),  # fills the window exactly: nothing cut
]


def direct_counts(tokenizer, pairs, window: int) -> list[int]:
    """The tokenizer's own count: document tokens alone, minus the second segment kept in the truncated pair
    (BERT's token_type_ids: 1 from the document's first token to the final [SEP])."""
    counts = []
    for query, document in pairs:
        alone = len(tokenizer(document, add_special_tokens=False)["input_ids"])
        pair = tokenizer(query, document, truncation="longest_first", max_length=window)
        counts.append(alone - (sum(pair["token_type_ids"]) - 1))
    return counts


@pytest.mark.parametrize("fast", [True, False])
def test_counts_equal_the_tokenizers_own(tiny_bert, fast):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert)) if fast else BertTokenizer.from_pretrained(str(tiny_bert))
    expected = direct_counts(tokenizer, PAIRS, WINDOW)
    assert expected[0] == expected[3] == expected[4] == 0 and expected[1] > 0 and expected[2] > 0
    assert expected[1] == 200 - (WINDOW - 3 - 5)  # a short query keeps all its 5 tokens
    assert truncated_document_tokens(tokenizer, PAIRS, WINDOW) == expected
    assert truncated_document_tokens(tokenizer, [], WINDOW) == []


def test_report_truncation_sets_the_meta_key_and_is_off_by_default(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    documents = [Document(id=f"d{index}", content=text, meta={"title": "t"}) for index, (_, text) in enumerate(PAIRS)]
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None, report_truncation=True)
    ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    expected = dict(zip([d.id for d in documents], direct_counts(tokenizer, [(QUERY, d.content) for d in documents],
                                                                 WINDOW)))
    assert {d.id: d.meta[TRUNCATED_TOKENS] for d in ranked} == expected
    assert all(d.meta["title"] == "t" for d in ranked) and TRUNCATED_TOKENS not in documents[1].meta  # copies
    plain = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None).run(query=QUERY, documents=documents)
    assert all(TRUNCATED_TOKENS not in d.meta for d in plain["documents"])
    assert [(d.id, d.score) for d in plain["documents"]] == [(d.id, d.score) for d in ranked]  # same scores
    # run_batch: a long query cuts other documents; each query gets its own counts
    long_query = PAIRS[2][0]
    batch = ranker.run_batch(query=[QUERY, long_query], documents=[documents, documents])["documents"]
    for query, ranked in zip([QUERY, long_query], batch):
        counts = direct_counts(tokenizer, [(query, d.content) for d in ranked], WINDOW)
        assert [d.meta[TRUNCATED_TOKENS] for d in ranked] == counts
    assert ranker.truncated_tokens(PAIRS) == direct_counts(tokenizer, PAIRS, WINDOW)
    assert ranker.window == WINDOW


def test_max_passage_reports_the_tokens_after_the_scored_passages(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    document = words(300)
    encoded, _ = encode_passages(tokenizer, [QUERY], [document], WINDOW, 16)
    passages = len(encoded["input_ids"])
    first = sum(encoded["token_type_ids"][0]) - 1  # document tokens in the first passage
    assert passages > 2
    for max_passages, expected in ((None, 0), (passages, 0), (1, 300 - first)):
        ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", long_document="max_passage", passage_overlap=16,
                                    max_passages=max_passages, report_truncation=True)
        ranked = ranker.run(query=QUERY, documents=[Document(id="long", content=document),
                                                    Document(id="short", content="pressure")])["documents"]
        assert {d.id: d.meta[TRUNCATED_TOKENS] for d in ranked} == {"long": expected, "short": 0}
        assert ranker.truncated_tokens([(QUERY, document)]) == [expected]
    two = CrossEncoderRanker(str(tiny_bert), device="cpu", long_document="max_passage", passage_overlap=16,
                             max_passages=passages - 1)
    last = sum(encoded["token_type_ids"][-1]) - 1
    assert two.truncated_tokens([(QUERY, document)]) == [last - 16]  # the last passage's tokens past the overlap


def test_report_truncation_is_serialised(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), report_truncation=True)
    data = ranker.to_dict()
    assert data["init_parameters"]["report_truncation"] is True
    assert CrossEncoderRanker.from_dict(data).report_truncation is True
    assert CrossEncoderRanker(str(tiny_bert)).to_dict()["init_parameters"]["report_truncation"] is False
