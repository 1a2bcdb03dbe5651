"""OpenAPI paths and schemas of the duplicate routes (web/api/duplicates.py)."""
from __future__ import annotations

from search.duplicates import DEFAULT_THRESHOLD, MAX_THRESHOLD

from .openapi_components import READ, WRITE, errors, ok, query_param, ref


def schemas() -> dict:
    item = {"type": "object", "required": ["id", "path", "distance"],
            "properties": {"id": {"type": "integer", "format": "int64"},
                           "path": {"type": "string"}, "name": {"type": "string"},
                           "distance": {"type": "number", "description":
                                        "Cosine distance to the group's keeper."}}}
    return {
        "DuplicateGroup": {"type": "object", "required": ["kind", "keeper", "count", "items"],
                           "properties": {
                               "kind": {"type": "string", "enum": ["identical", "near"]},
                               "keeper": {"type": "integer", "format": "int64",
                                          "description": "Suggested item to keep."},
                               "count": {"type": "integer"},
                               "items": {"type": "array", "items": item}}},
        "Duplicates": {"type": "object", "required": ["threshold", "groups", "items_compared"],
                       "properties": {
                           "threshold": {"type": "number"},
                           "items_compared": {"type": "integer"},
                           "identical_groups": {"type": "integer"},
                           "near_groups": {"type": "integer"},
                           "seconds": {"type": "number"},
                           "groups": {"type": "array", "items": ref("DuplicateGroup")}}},
    }


def paths() -> dict:
    decision = {"type": "object", "required": ["item_ids"], "additionalProperties": False,
                "properties": {"item_ids": {"type": "array", "minItems": 2, "maxItems": 1000, "uniqueItems": True,
                                            "items": {"type": "integer", "format": "int64",
                                                      "minimum": 1}},
                               "not_duplicates": {"type": "boolean", "default": True,
                                                  "description": "false forgets the "
                                                                 "decision."}}}
    return {
        "/api/duplicates": {
            "get": {"operationId": "duplicates", "security": READ,
                    "summary": "Groups of identical and near-identical items, each with a "
                               "suggested keeper.",
                    "parameters": [query_param("threshold", {
                        "type": "number", "minimum": 0, "maximum": MAX_THRESHOLD,
                        "default": DEFAULT_THRESHOLD}, "Cosine distance below which two "
                        "items are near-identical."),
                        query_param("limit", {"type": "integer", "minimum": 1,
                                              "maximum": 10000, "default": 500},
                                    "Most groups returned (largest first).")],
                    "responses": {**ok("Duplicates", "The groups."),
                                  **errors(400, 401, 403, 429, 503)}}},
        "/api/duplicates/decisions": {
            "post": {"operationId": "decideDuplicates", "security": WRITE,
                     "summary": "Remember that items are not duplicates of one another "
                                "(by content: survives re-indexing), or forget it.",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": decision}}},
                     "responses": {"200": {"description": "Recorded.", "content": {
                         "application/json": {"schema": {
                             "type": "object", "required": ["pairs", "not_duplicates"],
                             "properties": {"pairs": {"type": "integer"},
                                            "not_duplicates": {"type": "boolean"}}}}}},
                         **errors(400, 401, 403, 404, 409, 413, 415, 503)}}},
    }
