"""What the embedded BM25 and FAISS retrievers share, following Haystack's ``InMemory*Retriever`` conventions: a typed
document store, ``top_k`` (> 0, checked at init and at run), ``filters`` with a ``filter_policy``, ``scale_score``, and
serialization with the store included."""

from __future__ import annotations

from typing import Any, ClassVar

from haystack import default_from_dict, default_to_dict
from haystack.document_stores.types import FilterPolicy, apply_filter_policy


def check_top_k(top_k: int) -> int:
    """``top_k`` itself, or a ``ValueError`` when it is not a positive integer."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise ValueError(f"top_k must be greater than 0, but got {top_k!r}")
    return top_k


class StoreRetriever:
    """Base of a Haystack retriever bound to one document store class (``store_class``)."""

    store_class: ClassVar[type]

    def __init__(
        self,
        document_store: Any,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        scale_score: bool = False,
        filter_policy: FilterPolicy | str = FilterPolicy.REPLACE,
    ) -> None:
        """
        :param document_store: The store to search.
        :param top_k: Most documents returned (> 0).
        :param filters: Haystack filters applied to every search.
        :param scale_score: Map scores to (0, 1), as the matching ``InMemory*Retriever`` does.
        :param filter_policy: How run-time ``filters`` combine with the init ones: ``replace`` (default) or ``merge``.
        :raises TypeError: If ``document_store`` is not a ``store_class`` (as Haystack's ``InMemory*Retriever`` do).
        :raises ValueError: If ``top_k`` is not a positive integer.
        """
        if not isinstance(document_store, self.store_class):
            raise TypeError(
                f"document_store must be an instance of {self.store_class.__name__}, got {type(document_store).__name__}"
            )
        self.document_store = document_store
        self.top_k = check_top_k(top_k)
        self.filters = filters
        self.scale_score = scale_score
        self.filter_policy = (
            filter_policy if isinstance(filter_policy, FilterPolicy) else FilterPolicy.from_str(filter_policy)
        )

    def _search_arguments(
        self, top_k: int | None, filters: dict[str, Any] | None, scale_score: bool | None
    ) -> dict[str, Any]:
        """The store search's ``top_k``, ``filters`` and ``scale_score`` for one run."""
        return {
            "top_k": self.top_k if top_k is None else check_top_k(top_k),
            "filters": apply_filter_policy(self.filter_policy, self.filters, filters),
            "scale_score": self.scale_score if scale_score is None else scale_score,
        }

    def to_dict(self) -> dict[str, Any]:
        """Serialize, document store included."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            top_k=self.top_k,
            filters=self.filters,
            scale_score=self.scale_score,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`."""
        params = data["init_parameters"]
        params["document_store"] = cls.store_class.from_dict(params["document_store"])
        return default_from_dict(cls, data)
