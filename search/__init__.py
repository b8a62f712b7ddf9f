"""semsearch query path: the Searcher, its Hit results, the FAQ helper for bots, and evaluation.

    from search import Searcher
    hits = Searcher("faq-index").search("I forgot my login secret", k=5)
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .faq import FAQ, FAQAnswer, FAQMatch
    from .searcher import Hit, Passage, Searcher

_LAZY = {
    "Searcher": "searcher", "Hit": "searcher", "Passage": "searcher",
    "FAQ": "faq", "FAQAnswer": "faq", "FAQMatch": "faq",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")


__all__ = ["Searcher", "Hit", "Passage", "FAQ", "FAQAnswer", "FAQMatch"]
