"""``BiEncoderScorer`` (behind the README's bi-encoder figures) against sentence-transformers itself: the dot
product of ``SentenceTransformer.encode(..., normalize_embeddings=True)`` vectors, pair by pair."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_pipeline.eval import BiEncoderScorer

QUERIES = ["what similarity laws must be obeyed for aeroelastic models", "heat transfer in hypersonic flow"]
DOCUMENTS = [
    "similarity laws for aerothermoelastic testing of heated wing structures",
    "heat transfer to a blunt body in hypersonic flow",
    "supersonic flutter of thin wing panels",
    "boundary layer transition on a flat plate at high mach number",
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


def reference(model, pairs) -> np.ndarray:
    """One pair at a time: no batching, no deduplication, no cache."""
    scores = []
    for query, document in pairs:
        q, d = model.encode([query, document], convert_to_numpy=True, normalize_embeddings=True)
        scores.append(float(np.dot(q, d)))
    return np.array(scores)


def test_scores_are_sentence_transformers_cosine_and_documents_are_embedded_once(minilm, minilm_path, monkeypatch):
    scorer = BiEncoderScorer(str(minilm_path), batch_size=3, device="cpu")
    encoded: list[list[str]] = []
    encode = scorer.model.encode

    def counting_encode(texts, *args, **kwargs):
        encoded.append(list(texts))
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(scorer.model, "encode", counting_encode)

    # duplicate pairs and a document shared by both queries, in one call
    first = [(QUERIES[0], DOCUMENTS[0]), (QUERIES[0], DOCUMENTS[1]), (QUERIES[1], DOCUMENTS[1]),
             (QUERIES[0], DOCUMENTS[0]), (QUERIES[1], DOCUMENTS[2])]
    got = scorer.predict(first)
    np.testing.assert_allclose(got, reference(minilm, first), atol=1e-5)
    assert got[0] == got[3]  # the duplicate pair scores the same
    assert got[0] > got[1] and got[2] > got[4]  # and the scores rank: each query's own document first
    texts = [text for call in encoded for text in call]
    assert sorted(texts) == sorted(QUERIES + DOCUMENTS[:3])  # each distinct text embedded once

    # a second call: the cached documents are not embedded again, only the queries and the new document
    encoded.clear()
    second = [(QUERIES[1], DOCUMENTS[0]), (QUERIES[1], DOCUMENTS[3]), (QUERIES[0], DOCUMENTS[2])]
    np.testing.assert_allclose(scorer.predict(second), reference(minilm, second), atol=1e-5)
    texts = [text for call in encoded for text in call]
    assert sorted(texts) == sorted([QUERIES[1], QUERIES[0], DOCUMENTS[3]])


def test_without_the_document_cache_each_call_embeds_its_documents(minilm, minilm_path, monkeypatch):
    scorer = BiEncoderScorer(str(minilm_path), device="cpu", cache_documents=False)
    encoded: list[str] = []
    encode = scorer.model.encode
    monkeypatch.setattr(scorer.model, "encode", lambda texts, *a, **k: encoded.extend(texts) or encode(texts, *a, **k))
    pairs = [(QUERIES[0], DOCUMENTS[0]), (QUERIES[0], DOCUMENTS[0])]
    for _ in range(2):
        np.testing.assert_allclose(scorer.predict(pairs), reference(minilm, pairs), atol=1e-5)
    assert encoded == [QUERIES[0], DOCUMENTS[0]] * 2  # deduplicated within a call, embedded again in the next
    assert len(scorer.predict([])) == 0 and encoded == [QUERIES[0], DOCUMENTS[0]] * 2  # nothing to embed
