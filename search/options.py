"""Search options parsed once into small frozen dataclasses, for the REST API and the
Python API alike.

Search options arrive in three shapes: a query string (every value a string),
multipart form fields (strings too) and JSON bodies (typed values). One parser
handles all three: a string is converted, a JSON value must already have the
right type. Every problem is a :class:`BadRequest` naming the parameter.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import BadRequest
from .moments import DEFAULT_MEDIA, check_media
from .ranking import DATE_WINDOW, MAX_DATE_WINDOW, MODES
from .relevance import Relevance, Verdict
from .collapse import DEFAULT_COLLAPSE
from .schema import ItemFilter
from .service import MAX_K, MAX_OFFSET, Page, SearchRequest, SearchService, Term

MAX_TEXT_CHARS = 1000
MAX_TERMS = 16
DEFAULT_K = 20

#: Format names a client may filter on, and the spellings accepted for them.
FORMAT_ALIASES = {
    "JPEG": "JPEG", "JPG": "JPEG", "MPO": "MPO", "PNG": "PNG", "WEBP": "WEBP", "GIF": "GIF",
    "BMP": "BMP", "TIFF": "TIFF", "TIF": "TIFF", "HEIF": "HEIF", "HEIC": "HEIF", "AVIF": "AVIF",
    # videos (the container)
    "MP4": "MP4", "M4V": "MP4", "MOV": "MOV", "QT": "MOV", "3GP": "3GP", "MKV": "MKV",
    "WEBM": "WEBM", "AVI": "AVI", "MPEG": "MPEG", "MPG": "MPEG", "MPEG-TS": "MPEG-TS",
    "M2TS": "MPEG-TS", "MTS": "MPEG-TS", "OGV": "OGV", "FLV": "FLV", "WMV": "WMV",
}
FILTER_KEYS = ("path_prefix", "captured_after", "captured_before", "format", "min_width",
               "min_height", "min_duration", "max_duration")
OPTION_KEYS = ("k", "offset", "sort", "threshold", "relevance", "mode", "date_window", "media",
               "collapse", "collapse_threshold")
MAX_DURATION = 10_000_000.0  # seconds; bounds the duration filters
_INT_RE = re.compile(r"^[+-]?\d{1,12}$")

# String rules as regular expressions, shared with the OpenAPI document (web/openapi_components.py)
# and applied the way JSON Schema validators apply a ``pattern`` (``re.search``), so the
# document and the server agree on every value.
_DAY = (r"[1-9]\d{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])"
        r"|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|02-(?:0[1-9]|1\d|2[0-8]))"
        r"|[1-9]\d(?:0[48]|[2468][048]|[13579][26])-02-29"
        r"|(?:[2468][048]|[13579][26])00-02-29")
_TIME = (r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?"
         r"(?:[+-](?:0\d|1[0-4]):[0-5]\d|Z)?)?")
#: A filter date: "" (no filter), or an ISO 8601 date or date-time that exists on the calendar
#: (month lengths and leap years included), years 1000-9999.
DATE_PATTERN = rf"^$|^(?:{_DAY}){_TIME}$"


def _any_case(name: str) -> str:
    return "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in name)


_FORMAT_NAMES = "|".join(_any_case(n) for n in sorted(FORMAT_ALIASES, key=lambda n: (-len(n), n)))
#: One ``format`` value: format names in any letter case, separated by commas (spaces around
#: them allowed); empty names are ignored, so "" is no filter.
FORMAT_PATTERN = rf"^ *(?:(?:{_FORMAT_NAMES}) *)?(?:, *(?:(?:{_FORMAT_NAMES}) *)?)*$"
MAX_FORMAT_CHARS = 200
# A path segment ("/" or "\\" separate them) that is not "..": empty, or not starting with a
# dot, or "." alone, or "." and a non-dot, or ".." and more. No NUL anywhere.
_SEGMENT = (r"(?:[^/\\\x00.][^/\\\x00]*|\.|\.[^/\\\x00.][^/\\\x00]*|\.\.[^/\\\x00]+)?")
#: A path prefix must not climb out of its root: no ".." segment, and no NUL.
PATH_PREFIX_PATTERN = rf"^{_SEGMENT}(?:[/\\]{_SEGMENT})*$"
MAX_PREFIX_CHARS = 1000


@dataclass(frozen=True)
class SearchOptions:
    """Paging, ordering and filters of one search. ``path_prefix`` is relative to a root."""

    k: int = DEFAULT_K
    offset: int = 0
    sort: str = "score"
    threshold: float | None = None
    path_prefix: str | None = None
    filters: ItemFilter = field(default_factory=ItemFilter)  # without the path prefix
    relevance: Relevance = field(default_factory=Relevance)  # auto, off or a fixed cut
    mode: str | None = None  # hybrid, vector, keyword; None: the query's default
    date_window: int = DATE_WINDOW  # sort=date: the date_window most relevant, newest first
    media: str = DEFAULT_MEDIA  # "image", "video" or "all"
    collapse: bool = False  # fold near-duplicate hits into the best-ranked one
    collapse_threshold: float = DEFAULT_COLLAPSE  # cosine distance that folds

    @property
    def collapse_at(self) -> float | None:
        return self.collapse_threshold if self.collapse else None


def bool_param(value: Any, name: str, *, convert: bool = True) -> bool:
    """A boolean; in query strings and forms (``convert``) exactly ``true`` or ``false``,
    what the OpenAPI document says a boolean is there (so ``1`` or ``""`` is refused)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and convert and value in ("true", "false"):
        return value == "true"
    raise BadRequest(f"{name} must be true or false")


def int_param(value: Any, name: str, lo: int, hi: int, *, convert: bool = True) -> int:
    """An int in [lo, hi]; strings are converted only when ``convert`` (query/form values)."""
    if isinstance(value, str) and convert:
        if not _INT_RE.match(value.strip()):
            raise BadRequest(f"{name} must be an integer")
        value = int(value.strip())
    elif isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


def float_param(value: Any, name: str, lo: float, hi: float, *, convert: bool = True) -> float:
    if isinstance(value, str) and convert:
        try:
            value = float(value.strip())
        except ValueError:
            raise BadRequest(f"{name} must be a number") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be a number")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be a number between {lo} and {hi}")
    return float(value)


def str_param(value: Any, name: str, max_len: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    if len(value) > max_len:
        raise BadRequest(f"{name} is longer than {max_len} characters")
    return value


def _date(value: Any, name: str, *, end_of_day: bool) -> dt.datetime | None:
    """ISO 8601 date or date-time (:data:`DATE_PATTERN`); a time zone is dropped (EXIF times
    are local, naive). None for "" (no filter)."""
    text = str_param(value, name, 64)
    if not re.search(DATE_PATTERN, text):
        raise BadRequest(f"{name} must be an ISO 8601 date or date-time that exists, "
                         f"e.g. 2024-05-31 or 2024-05-31T18:30")
    text = text.removesuffix("\n")  # what "$" lets through, as in any JSON Schema validator
    if not text:
        return None
    if len(text) == 10:
        day = dt.date.fromisoformat(text)
        return dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min)
    return dt.datetime.fromisoformat(text).replace(tzinfo=None)


def _formats(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        text = str_param(item, "format", MAX_FORMAT_CHARS)
        if not re.search(FORMAT_PATTERN, text):
            raise BadRequest(f"format must name formats among "
                             f"{', '.join(sorted(set(FORMAT_ALIASES.values())))} (any letter "
                             f"case, separated by commas), not {text[:40]!r}")
        for part in text.removesuffix("\n").split(","):
            part = part.strip(" ").upper()
            if not part:
                continue
            fmt = FORMAT_ALIASES[part]
            if fmt not in out:
                out.append(fmt)
                if fmt == "JPEG" and "MPO" not in out:
                    out.append("MPO")  # camera JPEGs are stored as MPO; a user means both
    return tuple(out)


def _prefix(value: Any) -> str | None:
    text = str_param(value, "path_prefix", MAX_PREFIX_CHARS)
    if not re.search(PATH_PREFIX_PATTERN, text):
        raise BadRequest("path_prefix must not contain a '..' segment")
    text = text.replace("\\", "/").lstrip("/")
    return text or None


def parse_filters(src: Mapping[str, Any], *, typed: bool = False
                  ) -> tuple[str | None, ItemFilter]:
    """(relative path prefix, ItemFilter without prefix) from ``src`` (missing keys: no filter).

    ``typed``: values come from JSON and must already be numbers where numbers are due.
    """
    conv = not typed
    # "" is no filter for the text filters (what an empty form field sends); a number
    # filter must be a number.
    get = {k: src[k] for k in FILTER_KEYS if k in src}
    prefix = _prefix(get["path_prefix"]) if "path_prefix" in get else None
    # A range whose start is after its end is valid and matches nothing.
    after = _date(get["captured_after"], "captured_after", end_of_day=False) \
        if "captured_after" in get else None
    before = _date(get["captured_before"], "captured_before", end_of_day=True) \
        if "captured_before" in get else None
    flt = ItemFilter(
        captured_after=after, captured_before=before,
        formats=_formats(get["format"]) if "format" in get else (),
        min_width=int_param(get["min_width"], "min_width", 0, 1_000_000, convert=conv)
        if "min_width" in get else None,
        min_height=int_param(get["min_height"], "min_height", 0, 1_000_000, convert=conv)
        if "min_height" in get else None,
        min_duration=float_param(get["min_duration"], "min_duration", 0.0, MAX_DURATION,
                                 convert=conv) if "min_duration" in get else None,
        max_duration=float_param(get["max_duration"], "max_duration", 0.0, MAX_DURATION,
                                 convert=conv) if "max_duration" in get else None)
    # min_duration above max_duration is valid, like an empty date range: it matches nothing
    return prefix, flt


def parse_options(src: Mapping[str, Any], *, filters: Mapping[str, Any] | None = None,
                  typed: bool = False) -> SearchOptions:
    """Options from a flat mapping; filters from ``filters`` when given, else from ``src``.

    ``typed``: the mapping is parsed JSON (no string-to-number conversion).
    """
    conv = not typed
    get = {k: src[k] for k in OPTION_KEYS if k in src}
    sort = str_param(get.get("sort", "score"), "sort", 10)
    if sort not in ("score", "date"):
        raise BadRequest("sort must be 'score' or 'date'")
    mode = get.get("mode")
    if "mode" in get and (not isinstance(mode, str) or mode not in MODES):
        raise BadRequest("mode must be 'hybrid', 'vector' or 'keyword'")
    prefix, flt = parse_filters(filters if filters is not None else src, typed=typed)
    return SearchOptions(
        k=int_param(get["k"], "k", 1, MAX_K, convert=conv) if "k" in get else DEFAULT_K,
        offset=int_param(get["offset"], "offset", 0, MAX_OFFSET, convert=conv)
        if "offset" in get else 0,
        sort=sort,
        threshold=float_param(get["threshold"], "threshold", -1.0, 1.0, convert=conv)
        if "threshold" in get else None,
        path_prefix=prefix, filters=flt,
        relevance=Relevance.parse(get["relevance"], convert=conv)
        if "relevance" in get else Relevance(),
        mode=mode,
        date_window=int_param(get["date_window"], "date_window", 1, MAX_DATE_WINDOW, convert=conv)
        if "date_window" in get else DATE_WINDOW,
        media=check_media(str_param(get["media"], "media", 10).strip() or DEFAULT_MEDIA)
        if "media" in get else DEFAULT_MEDIA,
        collapse=bool_param(get["collapse"], "collapse", convert=conv)
        if "collapse" in get else False,
        collapse_threshold=float_param(get["collapse_threshold"], "collapse_threshold", 0.0,
                                       1.0, convert=conv)
        if "collapse_threshold" in get else DEFAULT_COLLAPSE)


def check_keys(body: Mapping[str, Any], allowed: tuple[str, ...] | set[str], where: str) -> None:
    # a multipart field without a name arrives as None: name it "" rather than fail sorting
    unknown = sorted("" if k is None else str(k) for k in set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s) in {where}: {', '.join(unknown)[:200]}")


def text_param(value: Any, name: str = "q") -> str:
    text = str_param(value, name).strip()
    if not text:
        raise BadRequest(f"{name} must not be empty")
    return text


def moment_id_param(value: Any, name: str = "moment_id") -> int:
    """A moment (segment) id from JSON."""
    return int_param(value, name, 1, 2**63 - 1, convert=False)


def item_id_param(value: Any, name: str = "item_id") -> int:
    """An item id from JSON (a number, not a string)."""
    return int_param(value, name, 1, 2**63 - 1, convert=False)


def weight_param(value: Any) -> float:
    return float_param(value, "weight", -100.0, 100.0, convert=False)


def expand_prefix(prefix: str, roots: tuple[str, ...]) -> tuple[str, ...]:
    """``ROOT/prefix`` for every root: a path filter relative to the library roots as the
    absolute path prefixes the store filters on."""
    local = prefix.replace("/", os.sep)
    return tuple(root.rstrip(os.sep) + os.sep + local for root in roots)


def run_search(service: SearchService, target: str, terms: tuple[Term, ...],
               opts: SearchOptions, *, exclude_ids: tuple[int, ...] = ()) -> Page:
    """Search ``target`` ("images" or "texts") for ``terms`` with ``opts``.

    Raises BadRequest for invalid combinations (date order or filters on texts), NotFound
    for an unknown item term, and whatever the service raises."""
    if target == "texts":
        if opts.sort != "score":
            raise BadRequest("sort=date applies to image results only")
        if opts.collapse:
            raise BadRequest("collapse applies to image results only")
        return service.search_texts(SearchRequest(terms, k=opts.k, offset=opts.offset,
                                                  threshold=opts.threshold, mode=opts.mode,
                                                  relevance=opts.relevance))
    if target != "images":
        raise BadRequest("target must be 'images' or 'texts'")
    flt = opts.filters
    if opts.path_prefix is not None:
        roots = service.item_roots()
        if not roots:  # nothing indexed yet: nothing can match
            req = SearchRequest(terms, k=opts.k, mode=opts.mode)  # still checks the mode
            return Page([], opts.offset, opts.k, False,
                        {"encode": 0.0, "search": 0.0, "fetch": 0.0},
                        mode=service.mode_of("images", req),
                        relevance=Verdict(str(opts.relevance), False))
        flt = dataclasses.replace(flt, path_prefixes=expand_prefix(opts.path_prefix, roots))
    return service.search_images(SearchRequest(
        terms, k=opts.k, offset=opts.offset, filters=flt, threshold=opts.threshold,
        sort=opts.sort, exclude_ids=exclude_ids, mode=opts.mode, relevance=opts.relevance,
        date_window=opts.date_window, media=opts.media, collapse=opts.collapse_at))
