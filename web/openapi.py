"""The OpenAPI 3.0 document of the API, served at ``/api/openapi.json``.

Written by hand next to the code it describes; tests validate it with
openapi-spec-validator and fuzz the app against it with schemathesis (every
response must match it, and none may be a 5xx other than a documented 503).
This module holds the paths, one entry per API route, and assembles the document;
the schemas, parameters and responses they share are in web/openapi_components.py.
"""
from __future__ import annotations

from search.media.video import VIDEO_MIME_TYPES

from .auth import SESSION_COOKIE, SESSION_MAX_AGE
from . import openapi_duplicates
from .items import THUMB_SIZES
from .openapi_components import (READ, SEARCH_ERRORS, WRITE, errors, form_props, id_param, ok,
                                 query_param, query_params, ref, schemas, security_schemes)

VERSION = "1.0.0"


def _image_body() -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": form_props()}},
        "application/json": {"schema": ref("ByItem")}}}


FILE_TYPES = {t: {"schema": {"type": "string", "format": "binary"}} for t in (
    *(f"image/{t}" for t in ("jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif")),
    *sorted(set(VIDEO_MIME_TYPES.values())))}


def _paths() -> dict:
    qp = query_params()
    item = [id_param()]
    return {
        "/api/search": {
            "get": {"operationId": "searchText", "summary": "Text to images.", "security": READ,
                    "parameters": [query_param("q", {"type": "string", "minLength": 1,
                                                     "maxLength": 1000, "pattern": r"\S"},
                                               "The query text.", required=True),
                                   *qp],
                    "responses": {**ok("ImagePage", "A page of image results."),
                                  **errors(400, 401, 403, 429, 503)}},
            "post": {"operationId": "searchCombined", "security": READ,
                     "summary": "Combined query: weighted texts, items, vectors and images.",
                     "description": "JSON body, or multipart/form-data with a field 'query' "
                                    "holding the same JSON and one file part per image term, "
                                    "named by the term's 'image' value.",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": ref("CombinedQuery")},
                         "multipart/form-data": {
                             "schema": {"type": "object", "required": ["query"],
                                        "properties": {"query": ref("CombinedUploadQuery")},
                                        "additionalProperties": {"type": "string",
                                                                 "format": "binary"}},
                             "encoding": {"query": {"contentType": "application/json"}}}}},
                     "responses": {**ok("AnyPage", "A page of image or text results."),
                                   **errors(*SEARCH_ERRORS)}}},
        "/api/search/image": {
            "post": {"operationId": "searchImage", "summary": "Image to images.",
                     "security": READ, "parameters": qp, "requestBody": _image_body(),
                     "description": "Multipart: the options may be form fields or query "
                                    "parameters (form fields win). JSON: the options are in "
                                    "the body; query parameters are validated, not used.",
                     "responses": {**ok("ImagePage", "A page of image results."),
                                   **errors(*SEARCH_ERRORS)}}},
        "/api/search/texts": {
            "post": {"operationId": "searchTexts", "summary": "Image to texts of the corpus.",
                     "security": READ, "parameters": qp, "requestBody": _image_body(),
                     "description": "Same inputs as /api/search/image; image filters do not "
                                    "apply to texts, sort must be 'score'.",
                     "responses": {**ok("TextPage", "A page of text results."),
                                   **errors(*SEARCH_ERRORS)}}},
        "/api/items/{item_id}": {
            "get": {"operationId": "getItem", "summary": "An indexed item and its nearest texts.",
                    "security": READ, "parameters": item,
                    "responses": {**ok("Item", "The item."), **errors(401, 403, 404, 503)}},
            "delete": {"operationId": "deleteItem", "security": WRITE,
                       "summary": "Remove an item from the store and index (the file stays).",
                       "parameters": item,
                       "responses": {"200": {"description": "Deleted.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted"],
                               "properties": {"deleted": {"type": "integer"}}}}}},
                           **errors(401, 403, 404, 409, 503)}}},
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
                        **errors(400, 401, 403, 404, 503)}}},
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
                                  **errors(401, 403, 404, 503)}}},
        "/api/items/{item_id}/moments": {
            "get": {"operationId": "getMoments", "security": READ,
                    "summary": "The moments of a video, in time order (none for an image).",
                    "parameters": [*item, query_param(
                        "t", {"type": "number", "minimum": 0, "maximum": 10_000_000},
                        "Seconds: also answer the moment this second falls in, as 'at'.")],
                    "responses": {**ok("Moments", "The moments."),
                                  **errors(400, 401, 403, 404, 503)}}},
        "/api/moments/{moment_id}/similar": {
            "get": {"operationId": "similarMoments", "security": READ,
                    "summary": "More like this moment: images and moments of other videos.",
                    "parameters": [id_param("moment_id"), *qp],
                    "responses": {**ok("ImagePage", "A page of image and video results."),
                                  **errors(400, 401, 403, 404, 429, 503)}}},
        "/api/items/{item_id}/similar": {
            "get": {"operationId": "similarItems", "summary": "Images like an indexed one.",
                    "security": READ, "parameters": [*item, *qp],
                    "responses": {**ok("ImagePage", "A page of image results."),
                                  **errors(400, 401, 403, 404, 429, 503)}}},
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
                         **errors(400, 401, 403, 404, 409, 413, 415, 503)}}},
        "/api/jobs/{job_id}": {
            "get": {"operationId": "getJob", "security": WRITE,
                    "summary": "Progress, counts and errors of an indexing job.",
                    "parameters": [id_param("job_id")],
                    "responses": {**ok("Job", "The job."), **errors(401, 403, 404, 503)}}},
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
                         **errors(400, 401, 403, 409, 413, 415, 503)}},
            "delete": {"operationId": "deleteTexts", "security": WRITE,
                       "summary": "Remove every text of a source.",
                       "parameters": [query_param("source", {"type": "string", "minLength": 1,
                                                             "maxLength": 200, "pattern": r"\S"},
                                                  "Source label.", required=True)],
                       "responses": {"200": {"description": "Removed.", "content": {
                           "application/json": {"schema": {
                               "type": "object", "required": ["deleted", "source"],
                               "properties": {"deleted": {"type": "integer"},
                                              "source": {"type": "string"}}}}}},
                           **errors(400, 401, 403, 409, 503)}}},
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
                "responses": {**ok("Session", "The session state."), **errors(400)}},
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
            "schemas": {**schemas(), **openapi_duplicates.schemas()},
            "securitySchemes": security_schemes(),
        },
    }
