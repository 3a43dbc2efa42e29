"""What the embedded BM25 and FAISS retrievers share: a typed document store, ``top_k``, ``filters``, and
serialization with the store included."""

from __future__ import annotations

from typing import Any, ClassVar

from haystack import default_from_dict, default_to_dict


class StoreRetriever:
    """Base of a Haystack retriever bound to one document store class (``store_class``)."""

    store_class: ClassVar[type]

    def __init__(self, document_store: Any, top_k: int = 10, filters: dict[str, Any] | None = None) -> None:
        if not isinstance(document_store, self.store_class):
            raise ValueError(f"document_store must be a {self.store_class.__name__}")
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.document_store = document_store
        self.top_k = top_k
        self.filters = filters

    def to_dict(self) -> dict[str, Any]:
        """Serialize, document store included."""
        return default_to_dict(
            self, document_store=self.document_store.to_dict(), top_k=self.top_k, filters=self.filters
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`."""
        params = data["init_parameters"]
        params["document_store"] = cls.store_class.from_dict(params["document_store"])
        return default_from_dict(cls, data)
