"""Self-supervised pairs from the corpus itself: a document's title (or first sentence) as the query.

The positive is the rest of the document, with the pseudo-query cut off so the pair cannot be matched by
copying; negatives are mined for the pseudo-query by the same first stage as the judged queries.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

MIN_QUERY_WORDS = 3
MIN_BODY_WORDS = 10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PseudoQuery:
    """A query made from document ``doc_id``: its title or first sentence, and the remaining ``body``."""

    doc_id: str
    query: str
    body: str


def pseudo_query(doc_id: str, title: str, text: str) -> PseudoQuery | None:
    """The title (or else the first sentence) as the query and the rest of the text as the positive.

    A text that starts with its title has the title removed from the positive. Returns ``None`` when
    the query or the remaining body is too short to make a useful pair.
    """
    title, text = (title or "").strip(), (text or "").strip()
    if title:
        query, body = title, text[len(title):].strip() if text.lower().startswith(title.lower()) else text
    else:
        parts = _SENTENCE_END.split(text, maxsplit=1)
        if len(parts) < 2:
            return None
        query, body = parts[0].strip(), parts[1].strip()
    if len(query.split()) < MIN_QUERY_WORDS or len(body.split()) < MIN_BODY_WORDS:
        return None
    return PseudoQuery(doc_id=doc_id, query=query, body=body)


def sample_pseudo_queries(corpus: Mapping[str, Mapping[str, str]], count: int, seed: int = 42) -> list[PseudoQuery]:
    """Up to ``count`` pseudo-queries from documents drawn at random (seeded) from ``corpus``."""
    if count <= 0:
        return []
    doc_ids = sorted(corpus)
    random.Random(seed).shuffle(doc_ids)
    made: list[PseudoQuery] = []
    for doc_id in doc_ids:
        document = corpus[doc_id]
        pair = pseudo_query(doc_id, document.get("title", ""), document.get("text", ""))
        if pair is not None:
            made.append(pair)
            if len(made) == count:
                break
    return made
