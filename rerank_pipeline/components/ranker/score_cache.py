"""``ScoreCache``: a bounded, thread-safe LRU of cross-encoder pair logits, for a served pipeline's repeated queries.

A pair's key is one sha256 digest of the model fingerprint (everything that changes a pair's logit: weights, window,
engine, precision, prompts, ...), the query as the model reads it, the document id and the document text as the
ranker scores it, so an edited document (same id, new text) misses and is rescored. Values are raw logits (before
the activation), so ``scale_score`` (and any calibration) apply after the cache. Hits, misses and evictions are
counted under the same lock as the entries.

Usage:
    cache = ScoreCache(100_000)
    keys = [cache.key(fingerprint, query, document_id, text) for ...]
    found = cache.get_many(keys)  # a logit row (tuple of floats) per key, None where missing
    cache.put_many(missing_keys, missing_rows)
    cache.info()  # {"max_entries": 100000, "entries": ..., "hits": ..., "misses": ..., "evictions": ...}
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

LogitRow = tuple[float, ...]
"""One pair's raw logits (one value for a one-label cross-encoder)."""


class ScoreCache:
    """Least-recently-used cache of pair logits, bounded by ``max_entries``; safe to share between threads.

    :param max_entries: Most pairs kept (>= 1); the least recently used is evicted beyond it.
    :raises ValueError: ``max_entries`` is not an integer >= 1.
    """

    def __init__(self, max_entries: int) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, LogitRow] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @staticmethod
    def key(fingerprint: str, query: str, document_id: str, text: str) -> bytes:
        """The 32-byte key of one pair: sha256 of the four fields, each prefixed by its length (unambiguous)."""
        digest = hashlib.sha256()
        for field in (fingerprint, query, document_id, text):
            data = field.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.digest()

    def get_many(self, keys: Sequence[bytes]) -> list[LogitRow | None]:
        """The cached logits of each key (``None`` where missing); each found key becomes the most recently used."""
        found: list[LogitRow | None] = []
        with self._lock:
            for key in keys:
                row = self._entries.get(key)
                if row is not None:
                    self._entries.move_to_end(key)
                found.append(row)
            hits = sum(row is not None for row in found)
            self._hits += hits
            self._misses += len(found) - hits
        return found

    def put_many(self, keys: Sequence[bytes], rows: Sequence[LogitRow]) -> None:
        """Store each key's logits, evicting the least recently used entries beyond ``max_entries``."""
        if len(keys) != len(rows):
            raise ValueError(f"put_many got {len(keys)} keys for {len(rows)} rows")
        with self._lock:
            for key, row in zip(keys, rows):
                self._entries[key] = tuple(row)
                self._entries.move_to_end(key)
            evicted = max(0, len(self._entries) - self.max_entries)
            for _ in range(evicted):
                self._entries.popitem(last=False)
            self._evictions += evicted

    def info(self) -> dict[str, int]:
        """``{"max_entries", "entries", "hits", "misses", "evictions"}``, read together under the lock."""
        with self._lock:
            return {"max_entries": self.max_entries, "entries": len(self._entries), "hits": self._hits,
                    "misses": self._misses, "evictions": self._evictions}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def disabled_info() -> dict[str, int]:
    """What :meth:`ScoreCache.info` reads for a ranker whose cache is off: all zeros."""
    return {"max_entries": 0, "entries": 0, "hits": 0, "misses": 0, "evictions": 0}
