"""Cut a document that does not fit the model's window (next to its query) into overlapping passages (MaxP).

Each (query, document) pair is tokenized once: the query is the first sequence and the tokenizer itself cuts the
document into windows (``truncation="only_second"``, ``return_overflowing_tokens=True``, ``stride``), so every
window is ``[CLS] query [SEP] passage [SEP]`` (or the model's own special tokens) and goes to the model as is.
Consecutive passages share ``overlap`` tokens (at most half a passage); the last passage holds what is left, so it
may be shorter than the others. Fast (Rust) tokenizers only, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIN_PASSAGE_TOKENS = 16
OVERFLOW_KEYS = ("overflow_to_sample_mapping", "offset_mapping", "special_tokens_mask", "length")


def passage_budget(max_length: int, special: int, query_tokens: int) -> int:
    """Document tokens a passage holds next to a query of ``query_tokens`` tokens: the rest of the window, or half
    the window (the query cut to the other half) when the rest would be under ``max(16, max_length // 4)``."""
    budget = max_length - special - query_tokens
    if budget < max(MIN_PASSAGE_TOKENS, max_length // 4):
        budget = max(1, (max_length - special) // 2)
    return budget


def passage_window(max_length: int, special: int, query_tokens: int, overlap: int) -> tuple[int, int]:
    """``(document tokens a passage holds, tokens consecutive passages share)`` next to a fitted query of
    ``query_tokens`` tokens (:func:`fit_query`): the window's rest, and ``overlap`` capped at half a passage."""
    budget = max_length - special - query_tokens
    return budget, min(overlap, budget // 2)


def tokens_beyond_passages(
    tokenizer: Any, queries: Sequence[str], documents: Sequence[str], max_length: int, overlap: int,
    max_passages: int,
) -> list[int]:
    """Document tokens after the first ``max_passages`` passages of each pair (:func:`encode_passages`'s windows):
    what a cap on passages leaves unscored; 0 for a document those passages cover."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    fitted = {query: fit_query(tokenizer, query, max_length)[1] for query in dict.fromkeys(queries)}
    lengths = tokenizer(list(documents), add_special_tokens=False, verbose=False)["input_ids"] if documents else []
    counts = []
    for query, ids in zip(queries, lengths):
        budget, stride = passage_window(max_length, special, fitted[query], overlap)
        counts.append(max(0, len(ids) - budget - (max_passages - 1) * (budget - stride)))
    return counts


def fit_query(tokenizer: Any, query: str, max_length: int) -> tuple[str, int]:
    """``query`` (cut to the tokens :func:`passage_budget` leaves it when it is long) and its token count.

    A cut query ends at a token's last character; should that text tokenize to more tokens than it may keep (a
    word cut inside), it is cut one token earlier until it fits.
    """
    special = tokenizer.num_special_tokens_to_add(pair=True)
    encoded = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    count = len(encoded["input_ids"])
    keep = max_length - special - passage_budget(max_length, special, count)
    if count <= keep:
        return query, count
    offsets = encoded["offset_mapping"]
    for end in range(keep, 0, -1):
        cut = query[: offsets[end - 1][1]]
        tokens = len(tokenizer(cut, add_special_tokens=False, verbose=False)["input_ids"])
        if tokens <= keep:
            return cut, tokens
    return "", 0


def encode_passages(
    tokenizer: Any,
    queries: Sequence[str],
    documents: Sequence[str],
    max_length: int,
    overlap: int,
) -> tuple[dict[str, list[list[int]]], list[int]]:
    """Tokenize each (query, document) pair once into the windows the model scores.

    Returns ``(encoded, owners)``: one row of ``input_ids`` (``attention_mask``, ``token_type_ids``, ... as the
    tokenizer gives them) per passage, and the index of the pair each row belongs to, in pair order. A pair that
    fits the window is one row, tokenized exactly as ``truncation="longest_first"`` would (nothing to cut).
    Queries are cut first (:func:`fit_query`), once per distinct query.
    """
    special = tokenizer.num_special_tokens_to_add(pair=True)
    fitted = {query: fit_query(tokenizer, query, max_length) for query in dict.fromkeys(queries)}
    # The stride (overlap) depends on the passage size, so pairs are tokenized in one call per distinct stride.
    groups: dict[int, list[int]] = {}
    for index, query in enumerate(queries):
        groups.setdefault(passage_window(max_length, special, fitted[query][1], overlap)[1], []).append(index)
    rows: dict[int, list[dict[str, list[int]]]] = {}
    for stride, indices in groups.items():
        encoded = tokenizer(
            [fitted[queries[index]][0] for index in indices], [documents[index] for index in indices],
            truncation="only_second", max_length=max_length, stride=stride, return_overflowing_tokens=True,
            padding=False, verbose=False,
        )
        names = [name for name in encoded.keys() if name not in OVERFLOW_KEYS]
        for row, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            rows.setdefault(indices[sample], []).append({name: encoded[name][row] for name in names})
    owners = [index for index in range(len(queries)) for _ in rows.get(index, [])]
    flat = [row for index in range(len(queries)) for row in rows.get(index, [])]
    names = list(flat[0]) if flat else ["input_ids"]
    return {name: [row[name] for row in flat] for name in names}, owners
