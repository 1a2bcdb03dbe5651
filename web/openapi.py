"""The OpenAPI 3.0 document of the API, served at ``/api/openapi.json``.

Written by hand next to the code it describes; tests validate it with
openapi-spec-validator and fuzz the app against it with schemathesis (every
response must match it, and none may be a 5xx other than a documented 503).
This module holds the paths, one entry per API route, and assembles the document;
the schemas, parameters and responses they share are in web/openapi_components.py.
"""
from __future__ import annotations

import os

from search.media.video import VIDEO_MIME_TYPES
from search.schema import SIDECAR

from . import openapi_duplicates
from .api.common import MAX_PARTS
from .items import THUMB_SIZES
from .openapi_components import (IMAGE_PART, IMAGE_TYPES, READ, SEARCH_ERRORS, WHITESPACE, WRITE,
                                 errors, form_props, id_param, ok, query_param, query_params, ref,
                                 security_schemes, text)
from .openapi_schemas import schemas
from .sessions import SESSION_COOKIE, SESSION_MAX_AGE

VERSION = "1.0.0"
SOURCE = (f"Source label (stored without surrounding whitespace); labels starting with "
          f"{SIDECAR!r} belong to sidecar captions and are not accepted.")


#: An absolute folder path on this server's platform.
ROOT_PATTERN = (r"^[A-Za-z]:[\\/][^\u0000]*$" if os.name == "nt" else r"^/[^\u0000]*$")
#: Sources the API may add to or remove: labels that are not a sidecar caption's.
NOT_SIDECAR = {"pattern": rf"^[{WHITESPACE}]*{SIDECAR}"}
#: Where an item id found in a page of results may be used next (the stateful tests follow).
ITEM_LINKS = {f"{op}FromResults": {"operationId": op,
                                  "parameters": {"item_id": "$response.body#/results/0/id"}}
              for op in ("getItem", "getThumbnail", "getFile", "similarItems")}


def _image_body(texts: bool = False) -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "maxProperties": MAX_PARTS,
                                           "properties": form_props(texts=texts)},
                                "encoding": {"image": {"contentType": ", ".join(IMAGE_TYPES)}}},
        "application/json": {"schema": ref("ByItemForTexts" if texts else "ByItem")}}}


def _results(schema_name: str, description: str) -> dict:
    """A 200 page of image results, with links from its first hit to the item routes."""
    out = ok(schema_name, description)
    out["200"]["links"] = ITEM_LINKS
    return out


FILE_TYPES = {t: {"schema": {"type": "string", "format": "binary"}} for t in (
    *(f"image/{t}" for t in ("jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif")),
    *sorted(set(VIDEO_MIME_TYPES.values())))}


def _paths() -> dict:
    qp = query_params()
    item = [id_param()]
    # A URL longer than the server's request line (or a proxy's) is refused with 414.
    return {
        "/api/search": {
            "get": {"operationId": "searchText", "summary": "Text to images.", "security": READ,
                    "parameters": [query_param("q", text(1000), "The query text.",
                                               required=True),
                                   *qp],
                    "responses": {**_results("ImagePage", "A page of image results."),
                                  **errors(400, 401, 403, 414, 429, 503)}},
            "post": {"operationId": "searchCombined", "security": READ,
                     "summary": "Combined query: weighted texts, items, vectors and images.",
                     "description": "JSON body, or multipart/form-data with a part 'query' "
                                    "holding the same JSON and one part per image term (an "
                                    "image file), named by the term's 'image' value; a term "
                                    "naming a part the request does not have is a 404, like "
                                    "an item_id that is not indexed.",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": ref("CombinedQuery")},
                         "multipart/form-data": {
                             "schema": {"type": "object", "required": ["query"],
                                        "maxProperties": MAX_PARTS,
                                        "properties": {"query": ref("CombinedUploadQuery")},
                                        "additionalProperties": IMAGE_PART},
                             "encoding": {"query": {"contentType": "application/json"}}}}},
                     "responses": {**ok("AnyPage", "A page of image or text results."),
                                   **errors(*SEARCH_ERRORS)}}},
        "/api/search/image": {
            "post": {"operationId": "searchImage", "summary": "Image to images.",
                     "security": READ, "parameters": qp, "requestBody": _image_body(),
                     "description": "Multipart: the options may be form fields or query "
                                    "parameters (form fields win). JSON: the options are in "
                                    "the body; query parameters are validated, not used.",
                     "responses": {**_results("ImagePage", "A page of image results."),
                                   **errors(*SEARCH_ERRORS, 414)}}},
        "/api/search/texts": {
            "post": {"operationId": "searchTexts", "summary": "Image to texts of the corpus.",
                     "security": READ, "parameters": query_params(texts=True),
                     "requestBody": _image_body(texts=True),
                     "description": "Same inputs as /api/search/image; image filters are "
                                    "checked but do not apply to texts, sort must be 'score'.",
                     "responses": {**ok("TextPage", "A page of text results."),
                                   **errors(*SEARCH_ERRORS, 414)}}},
        "/api/items/{item_id}": {
            "get": {"operationId": "getItem", "summary": "An indexed item and its nearest texts.",
                    "security": READ, "parameters": item,
                    "responses": {**ok("Item", "The item."),
                                  **errors(401, 403, 404, 429, 503)}},
            "delete": {"operationId": "deleteItem", "security": WRITE,
                       "summary": "Remove an item from the store and index (the file stays).",
                       "parameters": item,
                       "responses": {"200": {"description": "Deleted.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted"],
                               "properties": {"deleted": {"type": "integer"}}}}}},
                           **errors(401, 403, 404, 409, 429, 503)}}},
        "/api/items/{item_id}/thumbnail": {
            "get": {"operationId": "getThumbnail", "security": READ,
                    "summary": "JPEG thumbnail (longest side: the next cached size >= size).",
                    "description": "Of a video: the frame shown at second t (default: the "
                                   "representative frame of its longest moment).",
                    "parameters": [*item, query_param("size", {"type": "integer",
                                                               "minimum": 16, "maximum": 1024,
                                                               "default": 256},
                                                      f"Cached sizes: {THUMB_SIZES}."),
                                   query_param("t", {"type": "number", "minimum": 0,
                                                     "maximum": 10_000_000},
                                               "Seconds into a video (whole seconds; ignored "
                                               "for images).")],
                    "responses": {"200": {"description": "The thumbnail.", "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                        "304": {"description": "Not modified (ETag)."},
                        **errors(400, 401, 403, 404, 414, 429, 503)}}},
        "/api/items/{item_id}/file": {
            "get": {"operationId": "getFile", "security": READ,
                    "summary": "The original file of an indexed item.", "parameters": [
                        *item, {"name": "Range", "in": "header", "required": False,
                                "schema": {"type": "string"},
                                "description": "bytes=START-END (one range): a 206 with those "
                                               "bytes; what video players seek with."}],
                    "responses": {"200": {"description": "The file.", "content": FILE_TYPES},
                                  "206": {"description": "The requested byte range.",
                                          "content": FILE_TYPES},
                                  "304": {"description": "Not modified (ETag)."},
                                  "416": {"description": "The range lies outside the file."},
                                  **errors(401, 403, 404, 429, 503)}}},
        "/api/items/{item_id}/moments": {
            "get": {"operationId": "getMoments", "security": READ,
                    "summary": "The moments of a video, in time order (none for an image).",
                    "parameters": [*item, query_param(
                        "t", {"type": "number", "minimum": 0, "maximum": 10_000_000},
                        "Seconds: also answer the moment this second falls in, as 'at'.")],
                    "responses": {**ok("Moments", "The moments."),
                                  **errors(400, 401, 403, 404, 429, 503)}}},
        "/api/moments/{moment_id}/similar": {
            "get": {"operationId": "similarMoments", "security": READ,
                    "summary": "More like this moment: images and moments of other videos.",
                    "parameters": [id_param("moment_id"), *qp],
                    "responses": {**ok("ImagePage", "A page of image and video results."),
                                  **errors(400, 401, 403, 404, 429, 503)}}},
        "/api/items/{item_id}/similar": {
            "get": {"operationId": "similarItems", "summary": "Images like an indexed one.",
                    "security": READ, "parameters": [*item, *qp],
                    "responses": {**_results("ImagePage", "A page of image results."),
                                  **errors(400, 401, 403, 404, 414, 429, 503)}}},
        "/api/index": {
            "post": {"operationId": "startIndexJob", "security": WRITE,
                     "summary": "Index a folder that is, or lies inside, a configured root.",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["root"],
                                    "additionalProperties": False,
                                    "properties": {"root": {
                                        "type": "string", "maxLength": 4096,
                                        "pattern": ROOT_PATTERN,
                                        "description": "Absolute folder path on the server."},
                                        "retry_skipped": {
                                            "type": "boolean", "default": False,
                                            "description": "Read files skipped before again "
                                            "even when unchanged (after raising the pixel "
                                            "limit or installing pillow-heif)."}}}}}},
                     "responses": {"202": {
                         "description": "Job started; poll the Location.",
                         "headers": {"Location": {"schema": {"type": "string"}}},
                         "links": {"getJobFromStart": {
                             "operationId": "getJob",
                             "parameters": {"job_id": "$response.body#/job_id"}}},
                         "content": {"application/json": {"schema": {
                             "type": "object", "required": ["job_id"],
                             "properties": {"job_id": {"type": "integer"}}}}}},
                         **errors(400, 401, 403, 404, 409, 413, 415, 429, 503)}}},
        "/api/jobs/{job_id}": {
            "get": {"operationId": "getJob", "security": WRITE,
                    "summary": "Progress, counts and errors of an indexing job.",
                    "parameters": [id_param("job_id")],
                    "responses": {**ok("Job", "The job."),
                                  **errors(401, 403, 404, 429, 503)}}},
        "/api/texts": {
            "post": {"operationId": "addTexts", "security": WRITE,
                     "summary": "Add texts to the corpus (duplicates within a source skipped).",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["texts"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "texts": {"type": "array", "minItems": 1,
                                                  "maxItems": 10000, "items": text(2000)},
                                        "source": text(200, default="api", not_=NOT_SIDECAR,
                                                       description=SOURCE)}}}}},
                     "responses": {"201": {"description": "Added.", "content": {
                         "application/json": {"schema": {
                             "type": "object", "required": ["added", "duplicates", "source"],
                             "properties": {"added": {"type": "integer"},
                                            "duplicates": {"type": "integer"},
                                            "source": {"type": "string"}}}}}},
                         **errors(400, 401, 403, 409, 413, 415, 429, 503)}},
            "delete": {"operationId": "deleteTexts", "security": WRITE,
                       "summary": "Remove every text of a source.",
                       "parameters": [query_param("source", text(200, not_=NOT_SIDECAR),
                                                  SOURCE, required=True)],
                       "responses": {"200": {"description": "Removed.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted", "source"],
                               "properties": {"deleted": {"type": "integer"},
                                              "source": {"type": "string"}}}}}},
                           **errors(400, 401, 403, 409, 414, 429, 503)}}},
        **openapi_duplicates.paths(),
        "/api/session": _session_paths(),
        "/api/health": {
            "get": {"operationId": "health", "summary": "Liveness, counts and model.",
                    "security": [{}],
                    "responses": {**ok("Health", "The service is ready."), **errors(503)}}},
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
                               **errors(400, 401, 403, 429)}},
        "delete": {"operationId": "endSession", "security": [{}],
                   "summary": "Clear the session cookie (no key needed).",
                   "responses": {"204": {"description": "Cookie cleared.",
                                         "headers": cookie("An expired, empty cookie.")},
                                 **errors(400)}},
        "get": {"operationId": "getSession", "security": [{}],
                "summary": "Whether this request carries a valid session cookie.",
                "responses": {**ok("Session", "The session state."), **errors(400, 429)}},
    }


def document(vector_dim: int | None = None) -> dict:
    """The OpenAPI 3.0.3 document (a fresh dict). ``vector_dim``: the served model's
    dimension, when known (the exact length of raw query vectors)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "clipsearch API", "version": VERSION,
                 "description": "Search images by text, by example image and by combined "
                                "queries; find texts for images. Errors are "
                                "{\"error\": message}. See docs/api.md."},
        "paths": _paths(),
        "components": {
            "schemas": {**schemas(vector_dim), **openapi_duplicates.schemas()},
            "securitySchemes": security_schemes(),
        },
    }
