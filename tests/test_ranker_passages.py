"""MaxP (``long_document="max_passage"``): passage windows from the tokenizer's own overflow, one tokenization a pair.

The windowing before (kept below as the reference) tokenized each document for offsets, cut passage texts at them
and tokenized every (query, passage) pair again; its last window was aligned to the document's end. The tokenizer's
overflow gives the same windows except the last, which now holds what is left (shorter); where the windows
coincide the token ids, hence the scores, are identical.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from haystack import Document
from sentence_transformers import CrossEncoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker.passages import MIN_PASSAGE_TOKENS, encode_passages
from rerank_pipeline.components.ranker.scoring import cut_long_queries
from tiny_models import WORDS

QUERY = "supersonic boundary layer heat transfer"  # 5 tokens: 56 document tokens a window of 64
LONG_QUERY = "wing flutter at supersonic speed, " * 150  # cut to 31 tokens: 30 document tokens a window
NEEDLE = "heat transfer"
LONG_TEXT = "the " * 120 + "heat transfer in a boundary layer " * 3 + "plate surface " * 120


# ------------------------------------------------------------- the windowing before (reference)


def old_passage_windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    if length <= window:
        return [(0, length)]
    stride = max(1, window - min(overlap, window // 2))
    starts = list(range(0, length - window, stride)) + [length - window]
    return [(start, start + window) for start in starts]


def old_split_long_document(tokenizer: Any, query: str, document: str, max_length: int, overlap: int) -> list[str]:
    special = tokenizer.num_special_tokens_to_add(pair=True)
    query_tokens = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
    encoded = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    budget = max_length - special - query_tokens
    if budget < max(MIN_PASSAGE_TOKENS, max_length // 4):
        budget = max(1, (max_length - special) // 2)
    if len(offsets) <= budget:
        return [document]
    windows = old_passage_windows(len(offsets), budget, overlap)
    return [document[offsets[start][0]:offsets[end - 1][1]] for start, end in windows]


def old_pair_ids(tokenizer: Any, query: str, document: str, max_length: int, overlap: int) -> list[list[int]]:
    """What the ranker scored before: the query cut (cut_long_queries), passages split, each pair tokenized."""
    query = cut_long_queries(tokenizer, [(query, "")], max_length)[0][0]
    return [tokenizer(query, passage, truncation="longest_first", max_length=max_length)["input_ids"]
            for passage in old_split_long_document(tokenizer, query, document, max_length, overlap)]


def words(count: int, seed: int = 0) -> str:
    """``count`` words of the tiny vocabulary: ``count`` tokens, so passages cut from the text re-tokenize alike."""
    generator = random.Random(seed)
    return " ".join(generator.choice(WORDS) for _ in range(count))


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(str(tiny_bert))


# ------------------------------------------------------------- parity


@pytest.mark.parametrize(("query", "length"), [(QUERY, 56 + 40 * 3), (QUERY, 56 + 40), (LONG_QUERY, 30 + 15 * 6)])
def test_windows_that_coincide_with_the_old_ones_give_identical_ids_and_scores(tiny_bert, tokenizer, query, length):
    """Document lengths whose last old window ends a whole stride on: every window is the same."""
    document = words(length)
    assert len(tokenizer(document, add_special_tokens=False)["input_ids"]) == length
    old = old_pair_ids(tokenizer, query, document, 64, 16)
    encoded, owners = encode_passages(tokenizer, [query], [document], 64, 16)
    assert len(old) >= 2 and owners == [0] * len(old)
    assert encoded["input_ids"] == old

    # The old MaxP score: sentence-transformers' scores of the old (query, passage) texts, their maximum.
    cut_query = cut_long_queries(tokenizer, [(query, "")], 64)[0][0]
    old_passages = old_split_long_document(tokenizer, cut_query, document, 64, 16)
    old_scores = CrossEncoder(str(tiny_bert), device="cpu").predict([(cut_query, text) for text in old_passages])
    assert len(old_scores) == len(old) and old_scores.max() - old_scores.min() > 1e-3
    maxp = CrossEncoderRanker(str(tiny_bert), device="cpu", long_document="max_passage", passage_overlap=16)
    assert float(maxp.predict([(query, document)])[0]) == pytest.approx(float(old_scores.max()), abs=1e-6)


def test_where_windows_differ_only_the_last_one_does(tokenizer):
    """Old: the last window aligned to the document's end (full size, overlapping more); new: the tokens left."""
    document = words(56 + 40 * 3 + 10)
    old = old_pair_ids(tokenizer, QUERY, document, 64, 16)
    new = encode_passages(tokenizer, [QUERY], [document], 64, 16)[0]["input_ids"]
    assert len(new) == len(old) and new[:-1] == old[:-1]
    assert len(new[-1]) < len(old[-1]) == 64
    tail = new[-1][7:-1]  # [CLS] 5 query tokens [SEP] ... [SEP]
    assert old[-1][-1 - len(tail):-1] == tail, "both end at the document's end"


# ------------------------------------------------------------- windows


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_modernbert"])  # windows of 64 and 128 tokens
@pytest.mark.parametrize("overlap", [0, 16, 500])
def test_windows_cover_the_document_in_order_with_the_overlap(request, model_fixture, overlap):
    tokenizer = AutoTokenizer.from_pretrained(str(request.getfixturevalue(model_fixture)))
    window = tokenizer.model_max_length
    documents = [LONG_TEXT, "laminar flow", ""]
    encoded, owners = encode_passages(tokenizer, [QUERY] * 3, documents, window, overlap)
    rows = encoded["input_ids"][: owners.count(0)]
    assert owners == [0] * len(rows) + [1, 2] and len(rows) >= 3
    assert all(len(ids) <= window for ids in encoded["input_ids"])
    fitting = tokenizer([QUERY] * 2, documents[1:], truncation="longest_first", max_length=window)["input_ids"]
    assert encoded["input_ids"][len(rows):] == fitting  # a document that fits: one row, as PairScorer.tokenize's

    marked = tokenizer(QUERY, "wing")["input_ids"]  # [CLS] query [SEP] wing [SEP]: what surrounds a passage
    split = marked.index(tokenizer.convert_tokens_to_ids("wing"))
    prefix, suffix = marked[:split], marked[split + 1:]
    assert all(ids[: len(prefix)] == prefix and ids[len(ids) - len(suffix):] == suffix for ids in rows)
    passages = [ids[len(prefix): len(ids) - len(suffix)] for ids in rows]
    assert all(len(passage) == window - len(prefix) - len(suffix) for passage in passages[:-1])
    shared = min(overlap, len(passages[0]) // 2)
    assert all(a[len(a) - shared:] == b[:shared] for a, b in zip(passages, passages[1:]))
    rebuilt = passages[0] + [token for passage in passages[1:] for token in passage[shared:]]
    assert rebuilt == tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------- ranking


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_modernbert"])
def test_max_passage_score_is_the_best_window_forward(request, model_fixture):
    """The document's score is the maximum of the model's logits on its windows, each forwarded alone; a document
    that fits scores as under ``truncate``."""
    model_path = request.getfixturevalue(model_fixture)
    maxp = CrossEncoderRanker(str(model_path), top_k=None, device="cpu", scale_score=False,
                              long_document="max_passage", passage_overlap=16)
    truncate = CrossEncoderRanker(str(model_path), top_k=None, device="cpu", scale_score=False)
    documents_in = [Document(id="long", content=LONG_TEXT), Document(id="short", content="laminar flow")]
    maxp_scores = {d.id: d.score for d in maxp.run(query=QUERY, documents=documents_in)["documents"]}
    truncate_scores = {d.id: d.score for d in truncate.run(query=QUERY, documents=documents_in)["documents"]}
    assert maxp_scores["short"] == pytest.approx(truncate_scores["short"], abs=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    encoded, _ = encode_passages(tokenizer, [QUERY], [LONG_TEXT], tokenizer.model_max_length, 16)
    assert len(encoded["input_ids"]) >= 3
    model = AutoModelForSequenceClassification.from_pretrained(str(model_path)).eval()
    with torch.inference_mode():
        logits = [float(model(**{name: torch.tensor([rows[row]]) for name, rows in encoded.items()}).logits[0, 0])
                  for row in range(len(encoded["input_ids"]))]
    assert maxp_scores["long"] == pytest.approx(max(logits), abs=1e-4)
    assert max(logits) - min(logits) > 1e-3, "windows must score apart, else the maximum proves nothing"


def test_max_passage_keeps_the_maximum_over_passages(tiny_bert, tokenizer):
    """With a scorer that only likes windows whose passage opens with the needle, MaxP surfaces the middle passage;
    truncation (which only sees the head of the document) cannot."""
    needle = tokenizer(NEEDLE, add_special_tokens=False)["input_ids"]
    passage_start = len(tokenizer(QUERY)["input_ids"])  # [CLS] query [SEP]

    def fake_logits(features: dict[str, torch.Tensor]) -> torch.Tensor:
        heads = [ids[passage_start:passage_start + 40] for ids in features["input_ids"].tolist()]
        found = [any(head[i:i + len(needle)] == needle for i in range(len(head))) for head in heads]
        return torch.tensor([[5.0 if hit else -1.0] for hit in found])

    class FakeEngine:  # a Engine (components/ranker/engines) scoring with fake_logits
        input_names, device, needs_calibration = None, torch.device("cpu"), False

        def calibrate(self, batches) -> None:
            pass

        def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
            return fake_logits(features)

    results = {}
    for policy in ("truncate", "max_passage"):
        ranker = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu", scale_score=False,
                                    long_document=policy)
        ranker.warm_up()
        ranker._scorer.engine = FakeEngine()
        results[policy] = {
            d.id: d.score
            for d in ranker.run(query=QUERY, documents=[Document(id="long", content=LONG_TEXT),
                                                        Document(id="other", content="laminar flow")])["documents"]
        }
    assert results["max_passage"]["long"] == 5.0
    assert results["truncate"]["long"] == -1.0
    assert results["max_passage"]["other"] == results["truncate"]["other"] == -1.0


def test_each_pair_is_tokenized_once(tiny_bert, monkeypatch):
    """One tokenizer call for all pairs of a stride (plus one per distinct query to measure it), not one per
    passage."""
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", long_document="max_passage")
    ranker.warm_up()
    tokenizer = ranker._scorer.tokenizer
    calls = []
    original = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    ranker.predict([(QUERY, LONG_TEXT), (QUERY, LONG_TEXT + " wing"), (QUERY, "laminar flow")])
    assert len(calls) == 2
