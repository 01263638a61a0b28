"""Embedding stores, FAISS indexes and retrieval metrics for echoclip embeddings.

A leaf library: it imports faiss, numpy, pandas and pyarrow, and no other echoclip module::

    from echoclip.retrieval import EmbeddingStore, build_index, Index
    index = build_index(EmbeddingStore("emb/reports"))
    index.save("idx/reports")
    Index.load("idx/reports").search(video_embeddings, k=5)

Names resolve on first use, so importing the package loads neither faiss nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "RetrievalError": "echoclip.retrieval.errors",
    "EmbeddingStore": "echoclip.retrieval.store",
    "Index": "echoclip.retrieval.index",
    "build_index": "echoclip.retrieval.index",
    "choose_factory": "echoclip.retrieval.index",
    "find_index_folder": "echoclip.retrieval.index",
}

__all__ = ["EmbeddingStore", "Index", "RetrievalError", "build_index", "choose_factory", "find_index_folder"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echoclip.retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .errors import RetrievalError
    from .index import Index, build_index, choose_factory
    from .store import EmbeddingStore
