"""The reusable parts of the OpenAPI document: component schemas, security schemes,
error responses and the search parameters that several operations share.

web/openapi.py holds the paths and assembles the document; keeping these apart lets
each operation there read as its route, its statuses and names from here. Limits
(MAX_K, MAX_OFFSET, MAX_TERMS, the format names) are imported from the code that
enforces them, so the document cannot promise bounds the API does not apply.
"""
from __future__ import annotations

from search.options import (DATE_PATTERN, FORMAT_ALIASES, FORMAT_PATTERN, MAX_FORMAT_CHARS,
                            MAX_PREFIX_CHARS, PATH_PREFIX_PATTERN)
from search.ranking import DATE_WINDOW, MAX_DATE_WINDOW, MODES
from search.service import MAX_K, MAX_OFFSET

from .sessions import SESSION_COOKIE


def ref(name: str) -> dict:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


ERRORS = {
    400: "Invalid parameters or body (the message names the problem).",
    401: "An API key is required (Authorization: Bearer KEY).",
    403: "The API key is not valid, or the operation is not allowed.",
    404: "No such item, job or route (also: a file outside its library root).",
    409: "Another writer (an indexing job, a deletion, a CLI index) holds the library; "
         "the message names it.",
    413: "The request body is larger than the upload limit.",
    414: "The URL is longer than the HTTP server (or a proxy) accepts, answered by it in "
         "HTML: send long queries in a POST body (POST /api/search).",
    415: "Unsupported body type or image format.",
    429: "Rate limited, or too many failed key checks from this client; see Retry-After.",
    503: "The model, the index or the store is unavailable.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 1}}}


def errors(*codes: int) -> dict:
    """The error responses of an operation (``{"error": message}``), by status code."""
    out = {}
    for code in codes:
        resp = {"description": ERRORS[code],
                "content": {"application/json": {"schema": ref("Error")}}}
        if code == 414:  # answered by the HTTP server (gunicorn) before the app, in HTML
            resp["content"] = {"text/html": {"schema": {"type": "string"}}}
        if code == 429:
            resp["headers"] = RETRY_AFTER
        out[str(code)] = resp
    return out


def ok(schema_name: str, description: str, status: int = 200) -> dict:
    """A success response whose JSON body is the component schema ``schema_name``."""
    return {str(status): {"description": description,
                          "content": {"application/json": {"schema": ref(schema_name)}}}}


# Open unless the server requires keys for reads; then the header or a session cookie.
READ = [{}, {"bearerAuth": []}, {"cookieAuth": []}]
WRITE = [{"bearerAuth": []}]
SEARCH_ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)


def query_param(name: str, schema: dict, description: str, *, required: bool = False,
                **extra) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description, **extra}


def id_param(name: str = "item_id") -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "format": "int64", "minimum": 0}}


#: Strings the server takes as text never contain NUL (PostgreSQL cannot store it).
NO_NUL = r"^[^\u0000]*$"
#: Whitespace as the server strips it (Python's str.isspace), spelled out: "\s" means other
#: sets in ECMAScript and in schemathesis' generator.
WHITESPACE = (r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
              r"\u3000")
#: ...and where the text must say something, a character that is not whitespace.
NOT_BLANK = rf"^[^\u0000]*[^\u0000{WHITESPACE}][^\u0000]*$"


def text(max_length: int, *, blank: bool = False, not_: dict | None = None, **extra) -> dict:
    """A string of at most ``max_length`` characters without NUL, not blank unless ``blank``;
    ``not_``: a schema it must not match."""
    out = {"type": "string", "maxLength": max_length, "pattern": NO_NUL if blank else NOT_BLANK}
    if not blank:
        out["minLength"] = 1
    if not_ is not None:
        out["not"] = not_
    return {**out, **extra}


#: One ``format`` value: names in any case, separated by commas; "" (or only commas) is no
#: filter. The names are those of FORMAT_ALIASES.
FORMAT_VALUE = {"type": "string", "maxLength": MAX_FORMAT_CHARS, "pattern": FORMAT_PATTERN,
                "description": f"Comma-separated names among {', '.join(sorted(FORMAT_ALIASES))}, "
                               "any letter case."}
#: An uploaded image: its bytes, in one of the allowed formats (recognised by content).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
               "image/heif", "image/avif")
IMAGE_PART = {"type": "string", "format": "binary", "minLength": 1}

OPTION_PROPS = {
    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 20,
          "description": "Results per page."},
    "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0,
               "description": "Results to skip (stable paging)."},
    "sort": {"type": "string", "enum": ["score", "date"], "default": "score",
             "description": "score: best first; date: newest capture date first (images only)."},
    "threshold": {"type": "number", "minimum": -1, "maximum": 1,
                  "description": "Drop results scoring below this cosine similarity."},
    "relevance": {"oneOf": [{"type": "string", "enum": ["auto", "off"]},
                            {"type": "number", "minimum": -1, "maximum": 1}],
                  "default": "auto",
                  "description": "Relevance cut-off. auto: per query, calibrated for the "
                                 "model (see docs/api.md); off: every hit; a number: a fixed "
                                 "cosine cut-off. The response's 'relevance' says how many "
                                 "hits were cut."},
    "mode": {"type": "string", "enum": list(MODES),
             "description": "hybrid (default for text queries over images): words and vectors "
                            "fused by reciprocal rank fusion; vector; keyword (words only). "
                            "Quoted phrases match exactly."},
    "date_window": {"type": "integer", "minimum": 1, "maximum": MAX_DATE_WINDOW,
                    "default": DATE_WINDOW,
                    "description": "With sort=date: the N most relevant hits, newest first."},
    "media": {"type": "string", "enum": ["", "image", "video", "all"], "default": "all",
              "description": "image: images only; video: the moments of videos (one hit per "
                             "video: its best moment); all: both, merged by score."},
    "collapse": {"type": "boolean", "default": False,
                 "description": "Fold near-duplicate hits (vectors within collapse_threshold "
                                "of a better-ranked hit) into it: each hit lists them in "
                                "'similar'; a page still has k hits. Image results only."},
    "collapse_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01,
                           "description": "Cosine distance under which collapse folds a hit."},
}
#: Texts have no capture date: their searches sort by score only.
TEXT_OPTION_PROPS = {**OPTION_PROPS, "sort": {
    "type": "string", "enum": ["score"], "default": "score",
    "description": "Texts are ordered by score (sort=date applies to images only)."},
    "collapse": {"type": "boolean", "enum": [False], "default": False,
                 "description": "Texts are never folded (collapse applies to images only)."}}
FILTER_PROPS = {
    "path_prefix": {"type": "string", "maxLength": MAX_PREFIX_CHARS,
                    "pattern": PATH_PREFIX_PATTERN,
                    "description": "String prefix of the item path relative to its library root "
                                   "(e.g. 'holidays/2023/'); no '..' segment."},
    "captured_after": {"type": "string", "maxLength": 64, "pattern": DATE_PATTERN,
                       "description": "ISO 8601 date or date-time that exists (years 1000-9999); "
                                      "capture time at or after; '' for none. An empty range "
                                      "(after later than before) matches nothing."},
    "captured_before": {"type": "string", "maxLength": 64, "pattern": DATE_PATTERN,
                        "description": "ISO 8601 date (whole day included) or date-time; '' "
                                       "for none."},
    "format": {"oneOf": [FORMAT_VALUE, {"type": "array", "items": FORMAT_VALUE}],
               "description": "Image formats (any letter case; JPEG includes MPO). In a query "
                              "string: repeat the parameter or separate names by commas."},
    "min_width": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "min_height": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "min_duration": {"type": "number", "minimum": 0, "maximum": 10_000_000,
                     "description": "Seconds; only videos have a duration."},
    "max_duration": {"type": "number", "minimum": 0, "maximum": 10_000_000,
                     "description": "Seconds; only videos have a duration."},
}


def option_props(texts: bool) -> dict:
    return {**(TEXT_OPTION_PROPS if texts else OPTION_PROPS), **FILTER_PROPS}


def query_params(*, texts: bool = False) -> list[dict]:
    """The search options and filters as query parameters (``format`` repeatable);
    ``texts``: of a search for texts (sort by score only)."""
    out = []
    for name, schema in option_props(texts).items():
        schema = dict(schema)
        desc = schema.pop("description", name)
        if name == "format":
            out.append(query_param(name, {"type": "array", "items": FORMAT_VALUE}, desc,
                                   style="form", explode=True))
        else:
            out.append(query_param(name, schema, desc))
    return out


def form_props(*, texts: bool = False) -> dict:
    """The multipart form of an image search: the image and the options as parts."""
    props = {"image": {**IMAGE_PART, "description": "The query image (JPEG, PNG, WebP, GIF, "
                                                    "BMP, TIFF; HEIF/AVIF with pillow-heif)."}}
    for name, schema in option_props(texts).items():
        props[name] = (FORMAT_VALUE if name == "format"
                       else {k: v for k, v in schema.items() if k != "description"})
    return props


def security_schemes() -> dict:
    """``components.securitySchemes``: the API key header and the session cookie."""
    return {
        "bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "API key, only in the Authorization header. Writes always "
                           "need one; reads only when the server requires it."},
        "cookieAuth": {
            "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
            "description": "Session cookie from POST /api/session; authorises "
                           "reads only, never writes."}}
