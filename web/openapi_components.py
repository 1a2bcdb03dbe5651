"""The reusable parts of the OpenAPI document: component schemas, security schemes,
error responses and the search parameters that several operations share.

web/openapi.py holds the paths and assembles the document; keeping these apart lets
each operation there read as its route, its statuses and names from here. Limits
(MAX_K, MAX_OFFSET, MAX_TERMS, the format names) are imported from the code that
enforces them, so the document cannot promise bounds the API does not apply.
"""
from __future__ import annotations

from search.options import FORMAT_ALIASES, MAX_TERMS
from search.ranking import DATE_WINDOW, MAX_DATE_WINDOW, MODES
from search.service import MAX_K, MAX_OFFSET

from .auth import SESSION_COOKIE


def ref(name: str) -> dict:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


ERRORS = {
    400: "Invalid parameters or body (the message names the problem).",
    401: "An API key is required (Authorization: Bearer KEY).",
    403: "The API key is not valid, or the operation is not allowed.",
    404: "No such item, job or route (also: a file outside its library root).",
    409: "Another write or indexing job is in progress.",
    413: "The request body is larger than the upload limit.",
    415: "Unsupported body type or image format.",
    429: "Rate limited; see the Retry-After header.",
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


DATE_PATTERN = (r"^$|^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
                r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?"
                r"([+-](0\d|1[0-4]):[0-5]\d|Z)?)?$")
# "" is accepted and means no filter (what an empty form field sends).
FORMAT_NAME = {"type": "string", "enum": ["", *sorted(FORMAT_ALIASES)]}

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
FILTER_PROPS = {
    "path_prefix": {"type": "string", "maxLength": 1000,
                    "description": "String prefix of the item path relative to its library root "
                                   "(e.g. 'holidays/2023/'); no '..'."},
    "captured_after": {"type": "string", "maxLength": 64, "pattern": DATE_PATTERN,
                       "description": "ISO 8601 date or date-time; capture time at or after."},
    "captured_before": {"type": "string", "maxLength": 64, "pattern": DATE_PATTERN,
                        "description": "ISO 8601 date (whole day included) or date-time."},
    "format": {"oneOf": [FORMAT_NAME, {"type": "array", "items": FORMAT_NAME}],
               "description": "Image formats (any letter case; JPEG includes MPO). In a query "
                              "string: repeat the parameter or separate names by commas."},
    "min_width": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "min_height": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "min_duration": {"type": "number", "minimum": 0, "maximum": 10_000_000,
                     "description": "Seconds; only videos have a duration."},
    "max_duration": {"type": "number", "minimum": 0, "maximum": 10_000_000,
                     "description": "Seconds; only videos have a duration."},
}


def query_params() -> list[dict]:
    """The search options and filters as query parameters (``format`` repeatable)."""
    out = []
    for name, schema in {**OPTION_PROPS, **FILTER_PROPS}.items():
        schema = dict(schema)
        desc = schema.pop("description", name)
        if name == "format":
            out.append(query_param(name, {"type": "array", "items": FORMAT_NAME}, desc,
                                   style="form", explode=True))
        else:
            out.append(query_param(name, schema, desc))
    return out


def form_props() -> dict:
    """The multipart form of an image search: the image and the options as fields."""
    props = {"image": {"type": "string", "format": "binary",
                       "description": "The query image (JPEG, PNG, WebP, GIF, BMP, TIFF)."}}
    for name, schema in {**OPTION_PROPS, **FILTER_PROPS}.items():
        props[name] = (FORMAT_NAME if name == "format"
                       else {k: v for k, v in schema.items() if k != "description"})
    return props


def _term(kind: str, schema: dict) -> dict:
    return {"type": "object", "required": [kind], "additionalProperties": False,
            "properties": {kind: schema, "weight": {"type": "number", "minimum": -100,
                                                    "maximum": 100, "default": 1}}}


def schemas() -> dict:
    """``components.schemas``: bodies of requests and responses, by name."""
    nint = _nullable({"type": "integer"})
    nstr = _nullable({"type": "string"})
    item_props = {
        "id": {"type": "integer", "format": "int64"},
        "name": {"type": "string", "description": "File name."},
        "path": {"type": "string", "description": "Path relative to its library root."},
        "width": nint, "height": nint, "format": nstr,
        "size": {"type": "integer", "description": "File size in bytes."},
        "captured_at": _nullable({"type": "string", "description": "ISO 8601, camera time."}),
        "camera": nstr, "lens": nstr, "description": nstr,
        "keywords": _nullable({"type": "string", "description": "'; '-separated."}),
        "thumbnail_url": {"type": "string", "description": "Of a video hit: the frame of "
                                                           "its best moment."},
        "file_url": {"type": "string"},
        "media": {"type": "string", "enum": ["image", "video"]},
        "duration": _nullable({"type": "number", "description": "Seconds (videos)."}),
        "codec": nstr,
        "rotation": _nullable({"type": "integer", "description":
                               "Display rotation of a video, degrees counterclockwise."}),
    }
    moment = {"type": "object", "required": ["id", "t_start", "t_end", "t_rep",
                                              "thumbnail_url", "play_url"],
              "properties": {"id": {"type": "integer", "format": "int64",
                                    "description": "Moment id (a query term: moment_id)."},
                             "t_start": {"type": "number"}, "t_end": {"type": "number"},
                             "t_rep": {"type": "number",
                                       "description": "Time of its representative frame."},
                             "score": {"type": "number"}, "thumbnail_url": {"type": "string"},
                             "play_url": {"type": "string",
                                          "description": "file_url#t=t_start"}}}
    video_hit = {"t_start": {"type": "number", "description": "Best moment: start, seconds."},
                 "t_end": {"type": "number"}, "moment": ref("Moment"),
                 "moments": {"type": "array", "items": ref("Moment"), "description":
                             "Other matching moments of the same video (up to 3)."},
                 "play_url": {"type": "string"}}
    timings = {"type": "object", "additionalProperties": {"type": "number"},
               "description": "Milliseconds: encode, search, fetch, total."}

    relevance = {"type": "object", "required": ["requested", "applied", "kept", "cut"],
                 "properties": {
                     "requested": {"type": "string", "description": "auto, off or the number."},
                     "applied": {"type": "boolean", "description": "A cut was made."},
                     "threshold": _nullable({"type": "number", "description":
                                             "This query's cosine cut-off."}),
                     "kept": {"type": "integer", "description": "Hits kept in all pages."},
                     "cut": {"type": "integer", "description":
                             "Hits below the cut-off, shown by relevance=off."},
                     "reason": _nullable({"type": "string", "description":
                                          "Why auto cut nothing (e.g. no calibration)."}),
                     "see_cut": _nullable({"type": "string"})}}

    def page(items: dict) -> dict:
        return {"type": "object", "required": ["results", "offset", "k", "has_more", "mode",
                                               "relevance", "timings_ms"],
                "properties": {"results": {"type": "array", "items": items},
                               "offset": {"type": "integer"}, "k": {"type": "integer"},
                               "has_more": {"type": "boolean"},
                               "mode": {"type": "string", "enum": list(MODES)},
                               "relevance": _nullable(relevance), "timings_ms": timings}}

    filters = {"type": "object", "additionalProperties": False, "properties": FILTER_PROPS}
    terms = [_term("text", {"type": "string", "minLength": 1, "maxLength": 1000,
                            "pattern": r"\S"}),
             _term("item_id", {"type": "integer", "format": "int64", "minimum": 1}),
             _term("moment_id", {"type": "integer", "format": "int64", "minimum": 1,
                                 "description": "A moment of a video: more like it."}),
             _term("vector", {"type": "array", "minItems": 1, "maxItems": 4096,
                              "items": {"type": "number", "minimum": -1e30, "maximum": 1e30},
                              "description": "Raw query vector (model dimension)."})]

    def combined(term: str) -> dict:
        return {"type": "object", "required": ["terms"], "additionalProperties": False,
                "properties": {"terms": {"type": "array", "minItems": 1, "maxItems": MAX_TERMS,
                                         "items": ref(term)},
                               **OPTION_PROPS, "filters": filters,
                               "target": {"type": "string", "enum": ["images", "texts"],
                                          "default": "images"}}}
    by_item = {"type": "object", "required": ["item_id"], "additionalProperties": False,
               "properties": {"item_id": {"type": "integer", "format": "int64", "minimum": 1},
                              **OPTION_PROPS, **FILTER_PROPS},
               "description": "Search by an indexed item, with options and filters."}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "ItemHit": {"type": "object", "required": ["score", "rank_score", "matched",
                                                   *item_props],
                    "description": "An image, or a video with its best moment (t_start, "
                                   "t_end, moment, moments).",
                    "properties": {**item_props, "score": {
                        "type": "number", "description": "Cosine similarity to the query "
                                                         "(of a video: its best moment's)."},
                        "rank_score": _nullable({"type": "number", "description":
                                                 "What ordered the hit: cosine (vector), "
                                                 "BM25 (keyword) or fused RRF (hybrid)."}),
                        "matched": _nullable({
                            "type": "object", "description": "Query words found in the "
                            "item's words, by field: name, caption, metadata, text.",
                            "additionalProperties": {"type": "array",
                                                     "items": {"type": "string"}}}),
                        "similar_count": {"type": "integer", "description":
                                          "With collapse=true: hits folded into this one."},
                        "similar": {"type": "array", "description": "With collapse=true: the "
                                    "folded hits (item fields, score, distance to this hit).",
                                    "items": {"type": "object", "required": ["id", "score",
                                                                             "distance"],
                                              "properties": {
                                                  **item_props, "score": {"type": "number"},
                                                  "distance": {"type": "number"}}}},
                        **video_hit}},
        "Moment": moment,
        "Moments": {"type": "object", "required": ["item_id", "media", "moments"],
                    "properties": {"item_id": {"type": "integer", "format": "int64"},
                                   "media": {"type": "string"},
                                   "duration": _nullable({"type": "number"}),
                                   "moments": {"type": "array", "items": ref("Moment")},
                                   "at": ref("Moment")}},
        "TextHit": {"type": "object", "required": ["id", "score", "text", "source", "item_id"],
                    "properties": {"id": {"type": "integer", "format": "int64"},
                                   "score": {"type": "number"}, "text": {"type": "string"},
                                   "source": {"type": "string"},
                                   "item_id": _nullable({"type": "integer", "format": "int64"})}},
        "Item": {"type": "object", "required": [*item_props, "texts"],
                 "properties": {**item_props,
                                "moments": {"type": "array", "items": ref("Moment"),
                                            "description": "A video's moments, in order."},
                                "texts": {"type": "array", "items": ref("TextHit"),
                                          "description": "The 5 nearest texts of the corpus."},
                                "ocr": _nullable({
                                    "type": "object", "description": "Text read in the "
                                    "image (CLIPSEARCH_OCR); null when it was never read.",
                                    "properties": {
                                        "text": {"type": "string"},
                                        "confidence": _nullable({"type": "number"}),
                                        "lines": {"type": "integer"},
                                        "engine": {"type": "string"},
                                        "read_at": nstr}})}},
        "ImagePage": page(ref("ItemHit")),
        "TextPage": page(ref("TextHit")),
        "AnyPage": page({"anyOf": [ref("ItemHit"), ref("TextHit")]}),
        "Filters": filters,
        "ByItem": by_item,
        "Term": {"description": "Exactly one of text, item_id, vector, moment_id; negative "
                                "weights subtract.", "oneOf": terms},
        "UploadTerm": {"description": "A Term, or an image term naming an uploaded file part.",
                       "oneOf": [*terms, _term("image", {
                           "type": "string", "minLength": 1, "maxLength": 200,
                           "description": "Name of a file part of this multipart request."})]},
        "CombinedQuery": combined("Term"),
        "CombinedUploadQuery": combined("UploadTerm"),
        "Job": {"type": "object",
                "required": ["id", "roots", "state", "progress", "summary", "error"],
                "properties": {
                    "id": {"type": "integer"}, "roots": {"type": "array",
                                                         "items": {"type": "string"}},
                    "state": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
                    "progress": {"type": "object", "properties": {
                        "phase": nstr, "done": {"type": "integer"}, "total": {"type": "integer"},
                        "rate": {"type": "number"}, "eta": _nullable({"type": "number"})}},
                    "summary": _nullable({"type": "object"}), "error": nstr,
                    "created_at": nstr, "updated_at": nstr}},
        "Session": {"type": "object", "required": ["active", "expires_at", "key_required"],
                    "properties": {
                        "active": {"type": "boolean",
                                   "description": "A valid session cookie was sent."},
                        "expires_at": _nullable({"type": "integer", "description":
                                                 "Its expiry, in Unix seconds."}),
                        "key_required": {"type": "boolean", "description":
                                         "Reads need a key or a session on this server."}}},
        "Health": {"type": "object", "required": ["status", "images", "texts", "model"],
                   "properties": {"status": {"type": "string", "enum": ["ok"]},
                                  "images": {"type": "integer"}, "texts": {"type": "integer"},
                                  "model": {"type": "object", "properties": {
                                      "name": {"type": "string"},
                                      "pretrained": {"type": "string"},
                                      "dim": {"type": "integer"}}},
                                  "index": {"type": "object"}}},
    }


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
