"""Score text pairs fast: every pair tokenized once, sorted by real token count and batched by a token budget.

Almost no padding is computed; a query longer than the window is cut to what truncation keeps before it is paired,
so its length does not multiply the work. The forward pass is a ranker engine
(:class:`~rerank_pipeline.components.ranker.engines.Engine`: torch or OpenVINO).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rerank_pipeline.components.ranker.batching import plan_token_budget_batches

if TYPE_CHECKING:
    from rerank_pipeline.components.ranker.engines import Engine


def cut_long_queries(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> list[tuple[str, str]]:
    """``pairs`` with every query too long for the window cut short, tokenizing to the same truncated pair ids.

    ``longest_first`` truncation keeps at most ``max_length`` minus the special tokens of a query, and how many
    depends only on the document's token count and on which side is longer. A query past that is cut at a word
    boundary after ``max(budget + 1, longest document + 1)`` tokens (its documents' counts are read only then),
    so each pair tokenizes a few hundred query tokens instead of the whole text once per document. A cut whose
    first tokens differ from the query's is not used. Slow (Python) tokenizers get ``pairs`` back unchanged.
    """
    pairs = list(pairs)
    if not pairs or not getattr(tokenizer, "is_fast", False):
        return pairs
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    cuts = {query: _cut_after_tokens(tokenizer, query, budget + 1) for query in dict.fromkeys(q for q, _ in pairs)}
    cuts = {query: cut for query, cut in cuts.items() if cut is not None}
    if not cuts:
        return pairs
    paired = [index for index, (query, _) in enumerate(pairs) if query in cuts]
    documents = [pairs[index][1] for index in paired]
    lengths = [len(ids) for ids in tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]]
    longest: dict[str, int] = {}
    for index, length in zip(paired, lengths):
        longest[pairs[index][0]] = max(longest.get(pairs[index][0], 0), length)
    for query, length in longest.items():
        if length > budget:  # a document longer than the window: the cut query must stay the longer side
            cuts[query] = _cut_after_tokens(tokenizer, query, length + 1) or query
    return [(cuts.get(query, query), document) for query, document in pairs]


def truncated_document_tokens(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int, encoded: Any = None
) -> list[int]:
    """How many of each document's tokens the ``longest_first`` window cuts, as :meth:`PairScorer.tokenize` scores
    the pair: the document's own token count (alone, without special tokens) minus the document tokens the truncated
    pair keeps; 0 for a pair that fits. A long query may be cut too; only document tokens count.

    Only pairs that fill the window can be cut, so only their documents are tokenized alone.

    :param encoded: The pairs' truncated tokenization when already done (:meth:`PairScorer.encode`); else computed.
    :returns: One count a pair, in order.
    """
    pairs = list(pairs)
    if not pairs:
        return []
    if not getattr(tokenizer, "is_fast", False):  # a slow tokenizer truncates in Python, by this very function
        return [_slow_truncated_document_tokens(tokenizer, query, document, max_length) for query, document in pairs]
    if encoded is None:
        fitted = cut_long_queries(tokenizer, pairs, max_length)
        encoded = tokenizer([query for query, _ in fitted], [document for _, document in fitted],
                            truncation="longest_first", max_length=max_length, padding=False, verbose=False)
    full = [index for index, ids in enumerate(encoded["input_ids"]) if len(ids) >= max_length]
    counts = [0] * len(pairs)
    if full:
        lengths = tokenizer([pairs[index][1] for index in full], add_special_tokens=False, verbose=False)["input_ids"]
        for index, ids in zip(full, lengths):
            counts[index] = len(ids) - encoded.sequence_ids(index).count(1)
    return counts


def _slow_truncated_document_tokens(tokenizer: Any, query: str, document: str, max_length: int) -> int:
    """:func:`truncated_document_tokens` of one pair for a Python tokenizer (its own ``truncate_sequences``)."""
    query_ids = tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"]
    document_ids = tokenizer(document, add_special_tokens=False, verbose=False)["input_ids"]
    excess = len(query_ids) + len(document_ids) + tokenizer.num_special_tokens_to_add(pair=True) - max_length
    if excess <= 0:
        return 0
    _, kept, _ = tokenizer.truncate_sequences(query_ids, pair_ids=document_ids, num_tokens_to_remove=excess,
                                              truncation_strategy="longest_first")
    return len(document_ids) - len(kept)


def _cut_after_tokens(tokenizer: Any, text: str, keep: int) -> str | None:
    """``text`` cut at the first word boundary after its first ``keep`` tokens, or None when it has no more.

    Only a growing prefix of ``text`` is tokenized (tokens before the prefix's last word are final, since a fast
    tokenizer splits words before tokenizing them); the cut is checked to tokenize to the same first ``keep`` ids.
    """
    chars = 8 * keep + 64  # prose runs about 4 characters a token; grown 4x while too short
    while True:
        head = text[:chars]
        complete = chars >= len(text)
        encoded = tokenizer(head, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        words = encoded.word_ids()
        final = len(words)
        if not complete and words:
            final = words.index(words[-1])  # the last word may go on past the prefix
        last = final if complete else final + 1  # a prefix's last word starts at a boundary too
        boundary = next((index for index in range(max(keep, 1), last) if words[index] != words[index - 1]), None)
        if boundary is not None:
            cut = text[: encoded["offset_mapping"][boundary][0]]
            ids = tokenizer(cut, add_special_tokens=False, verbose=False)["input_ids"]
            return cut if len(ids) >= keep and ids[:keep] == encoded["input_ids"][:keep] else None
        if complete:
            return None
        chars *= 4


class PairScorer:
    """Score (query, document) text pairs with length-sorted, token-budget batches.

    ``engine`` maps a padded feature batch (torch tensors) to fp32 logits; ``input_names`` restricts the
    tokenizer outputs passed on (``None`` passes all). Tokenizer calls are serialized with a lock, because a fast
    tokenizer mutates its truncation/padding state on every call and is not safe to share between threads; code
    outside the scorer that tokenizes takes it through :meth:`locked_tokenizer`.
    """

    def __init__(
        self,
        tokenizer: Any,
        engine: Engine | Callable[[dict[str, torch.Tensor]], torch.Tensor] | None,
        max_length: int,
        input_names: set[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.engine = engine
        self.max_length = max_length
        self.input_names = input_names
        self._tokenizer_lock = threading.Lock()

    @contextmanager
    def locked_tokenizer(self) -> Iterator[Any]:
        """The tokenizer, held for the ``with`` block so no other thread's call changes its state meanwhile."""
        with self._tokenizer_lock:
            yield self.tokenizer

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, list[list[int]]]:
        """Tokenize pairs without padding, truncated ``longest_first`` to ``max_length`` like sentence-transformers.

        A query longer than the window is tokenized once and cut first (:func:`cut_long_queries`): same ids.
        """
        return self.select_inputs(self.encode(pairs))

    def encode(self, pairs: Sequence[tuple[str, str]]) -> Any:
        """The tokenizer's own output (a ``BatchEncoding``) of :meth:`tokenize`, every output kept."""
        with self._tokenizer_lock:
            pairs = cut_long_queries(self.tokenizer, pairs, self.max_length)
            queries = [pair[0] for pair in pairs]
            documents = [pair[1] for pair in pairs]
            return self.tokenizer(
                queries, documents, truncation="longest_first", max_length=self.max_length, padding=False
            )

    def truncated_tokens(self, pairs: Sequence[tuple[str, str]], encoded: Any = None) -> list[int]:
        """:func:`truncated_document_tokens` of ``pairs`` at this scorer's window (``encoded``: from :meth:`encode`)."""
        with self._tokenizer_lock:
            return truncated_document_tokens(self.tokenizer, pairs, self.max_length, encoded)

    def select_inputs(self, encoded: Any) -> dict[str, list[list[int]]]:
        """The tokenizer outputs the model takes (all of them when ``input_names`` is ``None``)."""
        return {name: encoded[name] for name in encoded.keys() if self.input_names is None or name in self.input_names}

    def pad(self, encoded: dict[str, list[list[int]]], indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Pad the selected tokenized pairs into one batch of tensors, as ``tokenizer.pad(padding=True)`` does.

        Filled with numpy rather than ``tokenizer.pad``, which walks Python lists and took longer than the forward
        pass of a MiniLM on CUDA (2.3 s against 1.8 s for 10,000 pairs on an H200). Inputs other than ids, masks and
        token types go through ``tokenizer.pad``.
        """
        fill_values = {
            "input_ids": self.tokenizer.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0),
        }
        if set(encoded) - set(fill_values) or fill_values["input_ids"] is None:
            batch = {name: [values[index] for index in indices] for name, values in encoded.items()}
            with self._tokenizer_lock:
                return dict(self.tokenizer.pad(batch, padding=True, return_tensors="pt"))
        lengths = [len(encoded["input_ids"][index]) for index in indices]
        longest = max(lengths)
        pad_left = getattr(self.tokenizer, "padding_side", "right") == "left"
        padded = {}
        for name, values in encoded.items():
            array = np.full((len(indices), longest), fill_values[name], dtype=np.int64)
            for row, (index, length) in enumerate(zip(indices, lengths)):
                if pad_left:
                    array[row, longest - length:] = values[index]
                else:
                    array[row, :length] = values[index]
            padded[name] = torch.from_numpy(array)
        return padded

    def logits(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Return fp32 logits ``[len(pairs), num_labels]`` in input order."""
        if not pairs:
            return torch.empty((0, 1), dtype=torch.float32)
        return self.encoded_logits(self.tokenize(pairs), batch_size, max_batch_tokens, show_progress_bar)

    def encoded_logits(
        self,
        encoded: dict[str, list[list[int]]],
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """:meth:`logits` of rows already tokenized (e.g. passage windows): ``[rows, num_labels]`` in row order."""
        if not encoded["input_ids"]:
            return torch.empty((0, 1), dtype=torch.float32)
        batches = self.batches(encoded, batch_size, max_batch_tokens)
        outputs: list[torch.Tensor | None] = [None] * len(encoded["input_ids"])
        for indices in tqdm(batches, desc="Scoring pairs", unit="batch", disable=not show_progress_bar):
            batch_logits = self.engine(self.pad(encoded, indices))
            for row, index in enumerate(indices):
                outputs[index] = batch_logits[row]
        return torch.stack(outputs)  # type: ignore[arg-type]

    def plan_batches(
        self, pairs: Sequence[tuple[str, str]], batch_size: int, max_batch_tokens: int
    ) -> tuple[dict[str, list[list[int]]], list[list[int]]]:
        """Tokenize ``pairs`` and cut them into token-budget batches: ``(encoded, [pair indices of a batch])``."""
        encoded = self.tokenize(pairs)
        return encoded, self.batches(encoded, batch_size, max_batch_tokens)

    @staticmethod
    def batches(encoded: dict[str, list[list[int]]], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
        """Token-budget batches (lists of row indices) of tokenized rows."""
        lengths = [len(ids) for ids in encoded["input_ids"]]
        return plan_token_budget_batches(lengths, max_batch_tokens, batch_size)


def apply_activation(logits: torch.Tensor, activation_fn: Callable | None) -> np.ndarray:
    """Activation then squeeze, in sentence-transformers' order: ``[n, 1] -> [n]``, ``[n, k]`` stays."""
    scores = activation_fn(logits) if activation_fn is not None else logits
    if scores.ndim > 1 and scores.shape[-1] == 1:
        scores = scores.squeeze(-1)
    return scores.float().numpy()
