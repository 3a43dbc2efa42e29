"""Token-budget batching: sort inputs by token count and cut batches so padding is not paid for."""

from __future__ import annotations

from collections.abc import Sequence


def plan_token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group input indices into batches, longest first, so each batch holds at most ``max_tokens`` padded tokens.

    Inputs are sorted by length (descending), so every batch pads to its first (longest) member and the padding
    waste is at most the length spread inside one batch. A batch never exceeds ``max_batch_size`` inputs; an input
    longer than ``max_tokens`` gets a batch of its own.
    """
    if max_tokens <= 0 or max_batch_size <= 0:
        raise ValueError(f"max_tokens and max_batch_size must be positive, got {max_tokens} and {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batches: list[list[int]] = []
    current: list[int] = []
    current_width = 0
    for index in order:
        width = max(current_width, lengths[index])
        if current and (len(current) >= max_batch_size or width * (len(current) + 1) > max_tokens):
            batches.append(current)
            current, width = [], lengths[index]
        current.append(index)
        current_width = width
    if current:
        batches.append(current)
    return batches
