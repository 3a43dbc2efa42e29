"""Split a document that does not fit the model's window (next to its query) into overlapping passages (MaxP)."""

from __future__ import annotations

from typing import Any

MIN_PASSAGE_TOKENS = 16


def passage_windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of size ``window`` covering ``length`` tokens, consecutive spans sharing
    ``overlap`` tokens; the last span is aligned to the end so every span is full-size."""
    if length <= window:
        return [(0, length)]
    stride = max(1, window - min(overlap, window // 2))
    starts = list(range(0, length - window, stride)) + [length - window]
    return [(start, start + window) for start in starts]


def split_long_document(
    tokenizer: Any, query: str, document: str, max_length: int, overlap: int
) -> list[str]:
    """Return ``[document]`` if the pair fits ``max_length`` tokens, else overlapping passages of the document text.

    Passages are cut on token boundaries (via the fast tokenizer's character offsets) and sized so that query,
    passage and special tokens fit ``max_length``; a query too long to leave room keeps half the window for the
    passage and is truncated by the usual ``longest_first`` rule.
    """
    special = tokenizer.num_special_tokens_to_add(pair=True)
    query_tokens = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
    # verbose=False: measuring a document longer than the model window is the point here, not an error
    encoded = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    budget = max_length - special - query_tokens
    if budget < max(MIN_PASSAGE_TOKENS, max_length // 4):
        budget = max(1, (max_length - special) // 2)
    if len(offsets) <= budget:
        return [document]
    return [document[offsets[start][0]:offsets[end - 1][1]] for start, end in passage_windows(len(offsets), budget, overlap)]
