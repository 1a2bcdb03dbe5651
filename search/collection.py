"""The Python API: a data directory opened for indexing and searching.

::

    import search

    with search.open("data", model="clipsearch-mini") as library:
        library.index(["photos"])
        for hit in library.search("a red car", k=5).hits:
            print(hit.score, hit.item["path"])

:func:`open` builds the same objects the ``clipsearch`` command and the web service
use (settings, encoder, store, indexes, search service), from keyword arguments rather
than the environment. Searches take the options of the REST API (``k``, ``offset``,
``sort``, ``threshold``, ``relevance``, ``mode``, ``date_window`` and the filters
``path_prefix``, ``captured_after``, ``captured_before``, ``format``, ``min_width``,
``min_height``) and validate them the same way (:mod:`search.options`).
"""
from __future__ import annotations

import builtins
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import Settings
from .encoder import load_encoder
from .errors import BadRequest, NotFound
from .ingest.job import IndexJob
from .ingest.summary import Progress, Summary
from .library import Library
from .options import FILTER_KEYS, OPTION_KEYS, parse_options, run_search
from .schema import STATUS_INDEXED, item_dict
from .service import Page, SearchService, Term
from .writer import GRACE


def open(data_dir: str | os.PathLike, **settings: Any) -> "Collection":  # noqa: A001
    """Open (creating it when new) the data directory ``data_dir``.

    ``settings``: any field of :class:`search.config.Settings` by name, e.g. ``model``
    ("ViT-B-32", "clipsearch-mini" or a config JSON), ``pretrained`` (a tag or a local
    checkpoint file), ``device``, ``db_url``, ``index_type``, ``workers``, ``batch_size``.
    The model is loaded here; a data directory holding another model's vectors is refused.

    Raises :class:`~search.errors.ModelUnavailable` when the weights cannot be loaded,
    :class:`~search.errors.ModelMismatch` for another model's data directory,
    TypeError for an unknown setting, :class:`~search.errors.BadRequest` for a bad value.
    """
    config = Settings.from_env({}, data_dir=os.fspath(data_dir), **settings)
    return Collection(config)


class Collection:
    """A data directory with its model loaded: index folders into it, search it.

    Thread-safe for searches; run one :meth:`index` at a time. Use as a context manager
    or call :meth:`close`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.encoder = load_encoder(settings)
        self.library = Library(settings)
        try:
            self.library.bind_model(self.encoder.identity)
            self.library.load()
        except BaseException:
            self.library.close()
            raise
        self.service = SearchService(self.library, self.encoder,
                                     max_pixels=settings.max_pixels)

    # -- indexing -----------------------------------------------------------
    def index(self, paths: Sequence[str | os.PathLike], *, reembed: bool = False,
              retry_skipped: bool = False, wait: bool = False,
              progress: Callable[[Progress], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Summary:
        """Index (again: only what changed) the folders ``paths``.

        Returns the :class:`~search.ingest.summary.Summary` (added, updated, moved,
        removed, unchanged, skipped files with reasons). Files that cannot be decoded
        are skipped with their reason; the rest are indexed. ``retry_skipped``: read
        skipped files again even if unchanged. Only one writer works on a library at a
        time: another one (a CLI job, a server's job or deletion) makes this raise
        :class:`~search.writer.WriterBusy` naming it, or, with ``wait``, wait for it.
        ``should_stop``: polled; once true the run commits what is complete and returns
        (``summary.interrupted``). Raises FileNotFoundError or NotADirectoryError for a
        path that is not a folder."""
        job = IndexJob(self.library, self.encoder, self.settings, progress=progress,
                       reembed=reembed, retry_skipped=retry_skipped,
                       wait=None if wait else GRACE, should_stop=should_stop,
                       what="Python API index()")
        summary = job.run([os.fspath(p) for p in paths])
        self.service.forget_roots()
        return summary

    # -- searching ----------------------------------------------------------
    def search(self, text: str | None = None, *, image: bytes | str | os.PathLike | None = None,
               item: int | None = None, vector: Iterable[float] | np.ndarray | None = None,
               **options: Any) -> Page:
        """Images for exactly one of ``text``, ``image`` (encoded bytes or a file path),
        ``item`` (an indexed item's id) or ``vector`` (dimension of the model).

        ``options``: k (1..1000, default 20), offset, sort ("score" or "date"),
        date_window (sort=date orders the N most relevant hits, default 1000, at most
        10000), threshold (-1..1), relevance ("auto", the default: a per-query cut-off;
        "off"; or a fixed cosine cut-off), mode ("hybrid", the default for text: words and
        vectors fused; "vector"; "keyword"), media ("all" by default: images and the
        moments of videos; "image"; "video": a video hit carries t_start, t_end and its
        moments) and the filters path_prefix (relative to a library root), captured_after
        / captured_before (ISO date or date-time), format (a name or a list), min_width,
        min_height, min_duration / max_duration (seconds, videos). Returns a
        :class:`~search.service.Page`: hits best first (``hit.score`` is the cosine
        similarity, ``hit.matched`` the query words found in the item's words), the mode
        used, and ``page.relevance`` (how many hits the cut-off kept and cut). Raises
        BadRequest for bad options or input, NotFound for an unknown item."""
        return self._search("images", self._term(text, image, item, vector), options)

    def search_texts(self, text: str | None = None, *,
                     image: bytes | str | os.PathLike | None = None, item: int | None = None,
                     vector: Iterable[float] | np.ndarray | None = None,
                     **options: Any) -> Page:
        """Texts of the corpus (captions and added texts) for one query, as :meth:`search`;
        options k, offset, threshold and relevance apply (vector search only)."""
        return self._search("texts", self._term(text, image, item, vector), options)

    def item(self, item_id: int) -> dict:
        """The stored fields of an indexed item (id, path, root, size, width, height,
        format, captured_at, camera, ...). Raises NotFound for an unknown or skipped id."""
        row = self.library.store.get_item(item_id)
        if row.status != STATUS_INDEXED:
            raise NotFound(f"no indexed item with id {item_id}")
        return item_dict(row)

    def duplicates(self, threshold: float | None = None) -> dict:
        """Groups of identical and near-identical items, each with its suggested keeper
        (:func:`search.duplicates.find_duplicates`; ``threshold``: cosine distance,
        default 0.01), as the REST API's ``GET /api/duplicates`` body (absolute paths)."""
        from .duplicates import DEFAULT_THRESHOLD, find_duplicates
        return find_duplicates(self.library.store, DEFAULT_THRESHOLD if threshold is None
                               else threshold).to_dict()

    def close(self) -> None:
        """Release the store's connections and the index files."""
        self.library.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------
    def _search(self, target: str, term: Term, options: dict) -> Page:
        unknown = set(options) - {*OPTION_KEYS, *FILTER_KEYS}
        if unknown:
            raise TypeError(f"unknown search option(s): {', '.join(sorted(unknown))}")
        values = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                  for k, v in options.items() if v is not None}
        return run_search(self.service, target, (term,), parse_options(values, typed=True))

    @staticmethod
    def _term(text, image, item, vector) -> Term:
        given = [x is not None for x in (text, image, item, vector)]
        if sum(given) != 1:
            raise BadRequest("give exactly one of text, image, item, vector")
        if image is not None and not isinstance(image, (bytes, bytearray)):
            with builtins.open(image, "rb") as fh:
                image = fh.read()
        if vector is not None:
            vector = tuple(float(x) for x in np.asarray(vector, dtype=np.float64).ravel())
        return Term(text=text, image=bytes(image) if image is not None else None,
                    item_id=int(item) if item is not None else None, vector=vector)

