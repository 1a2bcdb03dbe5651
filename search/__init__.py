"""clipsearch as a Python library: open a data directory, index folders, search.

::

    import search

    with search.open("data", model="clipsearch-mini") as library:
        summary = library.index(["photos"])          # only changes, like `clipsearch index`
        page = library.search("a red car", k=5)      # or image=..., item=..., vector=...
        for hit in page.hits:
            print(f"{hit.score:.3f}", hit.item["path"])
        texts = library.search_texts(image="photos/car.jpg", k=3)
        item = library.item(page.hits[0].id)

Exported: :func:`open`, :class:`Collection` (what it returns), :class:`Page` and
:class:`Hit` (search results), :class:`Summary` (an indexing run's report) and
:class:`SearchError` (the base of every error raised, with an HTTP-style ``status``).

Names load on first use, so that importing a submodule (the decoder processes import
:mod:`search.ingest.decode`) does not load the store, the indexes and the encoder.
"""
from __future__ import annotations

__all__ = ["open", "Collection", "Page", "Hit", "Summary", "SearchError"]


def __getattr__(name: str):
    if name in ("open", "Collection"):
        from . import collection as home
    elif name in ("Page", "Hit"):
        from . import service as home
    elif name == "Summary":
        from .ingest import summary as home
    elif name == "SearchError":
        from . import errors as home
    else:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
