"""The OpenAPI 3.0 document of the API, served at ``/api/openapi.json``.

Written by hand next to the code it describes; tests validate it with
openapi-spec-validator and fuzz the app against it with schemathesis (every
response must match it, and none may be a 5xx other than a documented 503).
"""
from __future__ import annotations

from search.service import MAX_K

from .auth import SESSION_COOKIE, SESSION_MAX_AGE
from .items import THUMB_SIZES
from .params import FORMAT_ALIASES, MAX_OFFSET, MAX_TERMS

VERSION = "1.0.0"


def _ref(name: str) -> dict:
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


def _errors(*codes: int) -> dict:
    out = {}
    for code in codes:
        resp = {"description": ERRORS[code],
                "content": {"application/json": {"schema": _ref("Error")}}}
        if code == 429:
            resp["headers"] = RETRY_AFTER
        out[str(code)] = resp
    return out


def _ok(schema_name: str, description: str, status: int = 200) -> dict:
    return {str(status): {"description": description,
                          "content": {"application/json": {"schema": _ref(schema_name)}}}}


# Open unless the server requires keys for reads; then the header or a session cookie.
READ = [{}, {"bearerAuth": []}, {"cookieAuth": []}]
WRITE = [{"bearerAuth": []}]
SEARCH_ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)


def _q(name: str, schema: dict, description: str, *, required: bool = False, **extra) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description, **extra}


def _id_param(name: str = "item_id") -> dict:
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
}


def _query_params() -> list[dict]:
    out = []
    for name, schema in {**OPTION_PROPS, **FILTER_PROPS}.items():
        schema = dict(schema)
        desc = schema.pop("description", name)
        if name == "format":
            out.append(_q(name, {"type": "array", "items": FORMAT_NAME}, desc, style="form",
                          explode=True))
        else:
            out.append(_q(name, schema, desc))
    return out


def _form_props() -> dict:
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


def _schemas() -> dict:
    nint = _nullable({"type": "integer"})
    nstr = _nullable({"type": "string"})
    item_props = {
        "id": {"type": "integer", "format": "int64"},
        "name": {"type": "string", "description": "File name."},
        "path": {"type": "string", "description": "Path relative to its library root."},
        "width": nint, "height": nint, "format": nstr,
        "size": {"type": "integer", "description": "File size in bytes."},
        "captured_at": _nullable({"type": "string", "description": "ISO 8601, camera time."}),
        "camera": nstr,
        "thumbnail_url": {"type": "string"}, "file_url": {"type": "string"},
    }
    timings = {"type": "object", "additionalProperties": {"type": "number"},
               "description": "Milliseconds: encode, search, fetch, total."}

    def page(items: dict) -> dict:
        return {"type": "object", "required": ["results", "offset", "k", "has_more", "timings_ms"],
                "properties": {"results": {"type": "array", "items": items},
                               "offset": {"type": "integer"}, "k": {"type": "integer"},
                               "has_more": {"type": "boolean"}, "timings_ms": timings}}

    filters = {"type": "object", "additionalProperties": False, "properties": FILTER_PROPS}
    terms = [_term("text", {"type": "string", "minLength": 1, "maxLength": 1000,
                            "pattern": r"\S"}),
             _term("item_id", {"type": "integer", "format": "int64", "minimum": 1}),
             _term("vector", {"type": "array", "minItems": 1, "maxItems": 4096,
                              "items": {"type": "number", "minimum": -1e30, "maximum": 1e30},
                              "description": "Raw query vector (model dimension)."})]

    def combined(term: str) -> dict:
        return {"type": "object", "required": ["terms"], "additionalProperties": False,
                "properties": {"terms": {"type": "array", "minItems": 1, "maxItems": MAX_TERMS,
                                         "items": _ref(term)},
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
        "ItemHit": {"type": "object", "required": ["score", *item_props],
                    "properties": {**item_props, "score": {"type": "number"}}},
        "TextHit": {"type": "object", "required": ["id", "score", "text", "source", "item_id"],
                    "properties": {"id": {"type": "integer", "format": "int64"},
                                   "score": {"type": "number"}, "text": {"type": "string"},
                                   "source": {"type": "string"},
                                   "item_id": _nullable({"type": "integer", "format": "int64"})}},
        "Item": {"type": "object", "required": [*item_props, "texts"],
                 "properties": {**item_props,
                                "texts": {"type": "array", "items": _ref("TextHit"),
                                          "description": "The 5 nearest texts of the corpus."}}},
        "ImagePage": page(_ref("ItemHit")),
        "TextPage": page(_ref("TextHit")),
        "AnyPage": page({"anyOf": [_ref("ItemHit"), _ref("TextHit")]}),
        "Filters": filters,
        "ByItem": by_item,
        "Term": {"description": "Exactly one of text, item_id, vector; negative weights "
                                "subtract.", "oneOf": terms},
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


def _image_body() -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": _form_props()}},
        "application/json": {"schema": _ref("ByItem")}}}


def _paths() -> dict:
    qp = _query_params()
    item = [_id_param()]
    return {
        "/api/search": {
            "get": {"operationId": "searchText", "summary": "Text to images.", "security": READ,
                    "parameters": [_q("q", {"type": "string", "minLength": 1, "maxLength": 1000,
                                            "pattern": r"\S"}, "The query text.", required=True),
                                   *qp],
                    "responses": {**_ok("ImagePage", "A page of image results."),
                                  **_errors(400, 401, 403, 429, 503)}},
            "post": {"operationId": "searchCombined", "security": READ,
                     "summary": "Combined query: weighted texts, items, vectors and images.",
                     "description": "JSON body, or multipart/form-data with a field 'query' "
                                    "holding the same JSON and one file part per image term, "
                                    "named by the term's 'image' value.",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("CombinedQuery")},
                         "multipart/form-data": {
                             "schema": {"type": "object", "required": ["query"],
                                        "properties": {"query": _ref("CombinedUploadQuery")},
                                        "additionalProperties": {"type": "string",
                                                                 "format": "binary"}},
                             "encoding": {"query": {"contentType": "application/json"}}}}},
                     "responses": {**_ok("AnyPage", "A page of image or text results."),
                                   **_errors(*SEARCH_ERRORS)}}},
        "/api/search/image": {
            "post": {"operationId": "searchImage", "summary": "Image to images.",
                     "security": READ, "parameters": qp, "requestBody": _image_body(),
                     "description": "Multipart: the options may be form fields or query "
                                    "parameters (form fields win). JSON: the options are in "
                                    "the body; query parameters are validated, not used.",
                     "responses": {**_ok("ImagePage", "A page of image results."),
                                   **_errors(*SEARCH_ERRORS)}}},
        "/api/search/texts": {
            "post": {"operationId": "searchTexts", "summary": "Image to texts of the corpus.",
                     "security": READ, "parameters": qp, "requestBody": _image_body(),
                     "description": "Same inputs as /api/search/image; image filters do not "
                                    "apply to texts, sort must be 'score'.",
                     "responses": {**_ok("TextPage", "A page of text results."),
                                   **_errors(*SEARCH_ERRORS)}}},
        "/api/items/{item_id}": {
            "get": {"operationId": "getItem", "summary": "An indexed item and its nearest texts.",
                    "security": READ, "parameters": item,
                    "responses": {**_ok("Item", "The item."), **_errors(401, 403, 404, 503)}},
            "delete": {"operationId": "deleteItem", "security": WRITE,
                       "summary": "Remove an item from the store and index (the file stays).",
                       "parameters": item,
                       "responses": {"200": {"description": "Deleted.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted"],
                               "properties": {"deleted": {"type": "integer"}}}}}},
                           **_errors(401, 403, 404, 409, 503)}}},
        "/api/items/{item_id}/thumbnail": {
            "get": {"operationId": "getThumbnail", "security": READ,
                    "summary": "JPEG thumbnail (longest side: the next cached size >= size).",
                    "parameters": [*item, _q("size", {"type": "integer", "minimum": 16,
                                                      "maximum": 1024, "default": 256},
                                             f"Cached sizes: {THUMB_SIZES}.")],
                    "responses": {"200": {"description": "The thumbnail.", "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                        "304": {"description": "Not modified (ETag)."},
                        **_errors(400, 401, 403, 404, 503)}}},
        "/api/items/{item_id}/file": {
            "get": {"operationId": "getFile", "security": READ,
                    "summary": "The original file of an indexed item.", "parameters": item,
                    "responses": {"200": {"description": "The file.", "content": {
                        f"image/{t}": {"schema": {"type": "string", "format": "binary"}}
                        for t in ("jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif")}},
                        "304": {"description": "Not modified (ETag)."},
                        **_errors(401, 403, 404, 503)}}},
        "/api/items/{item_id}/similar": {
            "get": {"operationId": "similarItems", "summary": "Images like an indexed one.",
                    "security": READ, "parameters": [*item, *qp],
                    "responses": {**_ok("ImagePage", "A page of image results."),
                                  **_errors(400, 401, 403, 404, 429, 503)}}},
        "/api/index": {
            "post": {"operationId": "startIndexJob", "security": WRITE,
                     "summary": "Index a folder that is, or lies inside, a configured root.",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["root"],
                                    "additionalProperties": False,
                                    "properties": {"root": {
                                        "type": "string", "maxLength": 4096,
                                        "pattern": r"^(/|[A-Za-z]:[\\/])",
                                        "description": "Absolute folder path on the server."}}}}}},
                     "responses": {"202": {
                         "description": "Job started; poll the Location.",
                         "headers": {"Location": {"schema": {"type": "string"}}},
                         "content": {"application/json": {"schema": {
                             "type": "object", "required": ["job_id"],
                             "properties": {"job_id": {"type": "integer"}}}}}},
                         **_errors(400, 401, 403, 404, 409, 413, 415, 503)}}},
        "/api/jobs/{job_id}": {
            "get": {"operationId": "getJob", "security": WRITE,
                    "summary": "Progress, counts and errors of an indexing job.",
                    "parameters": [_id_param("job_id")],
                    "responses": {**_ok("Job", "The job."), **_errors(401, 403, 404, 503)}}},
        "/api/texts": {
            "post": {"operationId": "addTexts", "security": WRITE,
                     "summary": "Add texts to the corpus (duplicates within a source skipped).",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["texts"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "texts": {"type": "array", "minItems": 1,
                                                  "maxItems": 10000,
                                                  "items": {"type": "string", "minLength": 1,
                                                            "maxLength": 2000,
                                                            "pattern": r"\S"}},
                                        "source": {"type": "string", "minLength": 1,
                                                   "maxLength": 200, "pattern": r"\S",
                                                   "default": "api"}}}}}},
                     "responses": {"201": {"description": "Added.", "content": {
                         "application/json": {"schema": {
                             "type": "object", "required": ["added", "duplicates", "source"],
                             "properties": {"added": {"type": "integer"},
                                            "duplicates": {"type": "integer"},
                                            "source": {"type": "string"}}}}}},
                         **_errors(400, 401, 403, 409, 413, 415, 503)}},
            "delete": {"operationId": "deleteTexts", "security": WRITE,
                       "summary": "Remove every text of a source.",
                       "parameters": [_q("source", {"type": "string", "minLength": 1,
                                                    "maxLength": 200, "pattern": r"\S"},
                                         "Source label.", required=True)],
                       "responses": {"200": {"description": "Removed.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted", "source"],
                               "properties": {"deleted": {"type": "integer"},
                                              "source": {"type": "string"}}}}}},
                           **_errors(400, 401, 403, 409, 503)}}},
        "/api/session": _session_paths(),
        "/api/health": {
            "get": {"operationId": "health", "summary": "Liveness, counts and model.",
                    "security": [{}],
                    "responses": {**_ok("Health", "The service is ready."), **_errors(503)}}},
        "/api/openapi.json": {
            "get": {"operationId": "openapi", "summary": "This document.", "security": [{}],
                    "responses": {"200": {"description": "OpenAPI 3.0 document.",
                                          "content": {"application/json": {
                                              "schema": {"type": "object"}}}}}}},
    }


def _session_paths() -> dict:
    def cookie(what: str) -> dict:
        return {"Set-Cookie": {"required": True, "description": what,
                               "schema": {"type": "string"}}}
    return {
        "post": {"operationId": "startSession", "security": WRITE,
                 "summary": "Exchange an API key for a session cookie (for browser pages).",
                 "description": f"Sets `{SESSION_COOKIE}` (HttpOnly, SameSite=Strict, Path=/, "
                                "Secure over HTTPS, Max-Age = CLIPSEARCH_SESSION_HOURS, "
                                f"default {SESSION_MAX_AGE} s). The cookie "
                                "authorises reads only; writes always need the header.",
                 "responses": {"204": {"description": "Session started.",
                                       "headers": cookie("The session cookie.")},
                               **_errors(400, 401, 403, 429)}},
        "delete": {"operationId": "endSession", "security": [{}],
                   "summary": "Clear the session cookie (no key needed).",
                   "responses": {"204": {"description": "Cookie cleared.",
                                         "headers": cookie("An expired, empty cookie.")},
                                 **_errors(400)}},
        "get": {"operationId": "getSession", "security": [{}],
                "summary": "Whether this request carries a valid session cookie.",
                "responses": {**_ok("Session", "The session state."), **_errors(400)}},
    }


def document() -> dict:
    """The OpenAPI 3.0.3 document (a fresh dict)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "clipsearch API", "version": VERSION,
                 "description": "Search images by text, by example image and by combined "
                                "queries; find texts for images. Errors are "
                                "{\"error\": message}. See docs/api.md."},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http", "scheme": "bearer",
                    "description": "API key, only in the Authorization header. Writes always "
                                   "need one; reads only when the server requires it."},
                "cookieAuth": {
                    "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                    "description": "Session cookie from POST /api/session; authorises "
                                   "reads only, never writes."}},
        },
    }
