"""The component schemas of the OpenAPI document (``components.schemas``): items, hits,
pages, queries and jobs. Built from the parts in :mod:`web.openapi_components` and the
limits of the code that enforces them."""
from __future__ import annotations

from search.options import MAX_TERMS, MAX_TEXT_CHARS
from search.ranking import MODES

from .openapi_components import (FILTER_PROPS, OPTION_PROPS, TEXT_OPTION_PROPS, nullable,
                                 option_props, ref, text)


def _term(kind: str, schema: dict) -> dict:
    return {"type": "object", "required": [kind], "additionalProperties": False,
            "properties": {kind: schema, "weight": {"type": "number", "minimum": -100,
                                                    "maximum": 100, "default": 1}}}


def schemas(vector_dim: int | None = None) -> dict:
    """``components.schemas``: bodies of requests and responses, by name. ``vector_dim``:
    the model's dimension, the exact length of a raw query vector (unknown: 1 to 4096)."""
    nint = nullable({"type": "integer"})
    nstr = nullable({"type": "string"})
    item_props = {
        "id": {"type": "integer", "format": "int64"},
        "name": {"type": "string", "description": "File name."},
        "path": {"type": "string", "description": "Path relative to its library root."},
        "width": nint, "height": nint, "format": nstr,
        "size": {"type": "integer", "description": "File size in bytes."},
        "captured_at": nullable({"type": "string", "description": "ISO 8601, camera time."}),
        "camera": nstr, "lens": nstr, "description": nstr,
        "keywords": nullable({"type": "string", "description": "'; '-separated."}),
        "thumbnail_url": {"type": "string", "description": "Of a video hit: the frame of "
                                                           "its best moment."},
        "file_url": {"type": "string"},
        "media": {"type": "string", "enum": ["image", "video"]},
        "duration": nullable({"type": "number", "description": "Seconds (videos)."}),
        "codec": nstr,
        "rotation": nullable({"type": "integer", "description":
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
                     "threshold": nullable({"type": "number", "description":
                                             "This query's cosine cut-off."}),
                     "kept": {"type": "integer", "description": "Hits kept in all pages."},
                     "cut": {"type": "integer", "description":
                             "Hits below the cut-off, shown by relevance=off."},
                     "reason": nullable({"type": "string", "description":
                                          "Why auto cut nothing (e.g. no calibration)."}),
                     "see_cut": nullable({"type": "string"})}}

    def page(items: dict) -> dict:
        return {"type": "object", "required": ["results", "offset", "k", "has_more", "mode",
                                               "relevance", "timings_ms"],
                "properties": {"results": {"type": "array", "items": items},
                               "offset": {"type": "integer"}, "k": {"type": "integer"},
                               "has_more": {"type": "boolean"},
                               "mode": {"type": "string", "enum": list(MODES)},
                               "relevance": nullable(relevance), "timings_ms": timings}}

    filters = {"type": "object", "additionalProperties": False, "properties": FILTER_PROPS}
    lengths = ({"minItems": vector_dim, "maxItems": vector_dim} if vector_dim
               else {"minItems": 1, "maxItems": 4096})
    terms = [_term("text", text(MAX_TEXT_CHARS)),
             _term("item_id", {"type": "integer", "format": "int64", "minimum": 1}),
             _term("moment_id", {"type": "integer", "format": "int64", "minimum": 1,
                                 "description": "A moment of a video: more like it."}),
             _term("vector", {"type": "array", **lengths,
                              "items": {"type": "number", "minimum": -1e30, "maximum": 1e30},
                              "description": "Raw query vector of the model's dimension; "
                                             "only its direction counts (all zeros: no "
                                             "direction, it adds nothing)."})]

    def combined(term: str) -> dict:
        """Images (the default target; sort by score or date) or texts (sort by score)."""
        def variant(target: str, texts: bool, required: list[str]) -> dict:
            return {"type": "object", "required": required, "additionalProperties": False,
                    "properties": {"terms": {"type": "array", "minItems": 1,
                                             "maxItems": MAX_TERMS, "items": ref(term)},
                                   **(TEXT_OPTION_PROPS if texts else OPTION_PROPS),
                                   "filters": filters,
                                   "target": {"type": "string", "enum": [target]}}}
        return {"description": "target 'images' (the default) or 'texts'; texts sort by "
                               "score only and ignore the filters.",
                "oneOf": [variant("images", False, ["terms"]),
                          variant("texts", True, ["terms", "target"])]}

    def by_item(texts: bool) -> dict:
        return {"type": "object", "required": ["item_id"], "additionalProperties": False,
                "properties": {"item_id": {"type": "integer", "format": "int64", "minimum": 1},
                               **option_props(texts)},
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
                        "rank_score": nullable({"type": "number", "description":
                                                 "What ordered the hit: cosine (vector), "
                                                 "BM25 (keyword) or fused RRF (hybrid)."}),
                        "matched": nullable({
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
                                   "duration": nullable({"type": "number"}),
                                   "moments": {"type": "array", "items": ref("Moment")},
                                   "at": ref("Moment")}},
        "TextHit": {"type": "object", "required": ["id", "score", "text", "source", "item_id"],
                    "properties": {"id": {"type": "integer", "format": "int64"},
                                   "score": {"type": "number"}, "text": {"type": "string"},
                                   "source": {"type": "string"},
                                   "item_id": nullable({"type": "integer", "format": "int64"})}},
        "Item": {"type": "object", "required": [*item_props, "texts"],
                 "properties": {**item_props,
                                "moments": {"type": "array", "items": ref("Moment"),
                                            "description": "A video's moments, in order."},
                                "texts": {"type": "array", "items": ref("TextHit"),
                                          "description": "The 5 nearest texts of the corpus."},
                                "ocr": nullable({
                                    "type": "object", "description": "Text read in the "
                                    "image (CLIPSEARCH_OCR); null when it was never read.",
                                    "properties": {
                                        "text": {"type": "string"},
                                        "confidence": nullable({"type": "number"}),
                                        "lines": {"type": "integer"},
                                        "engine": {"type": "string"},
                                        "read_at": nstr}})}},
        "ImagePage": page(ref("ItemHit")),
        "TextPage": page(ref("TextHit")),
        "AnyPage": page({"anyOf": [ref("ItemHit"), ref("TextHit")]}),
        "Filters": filters,
        "ByItem": by_item(False),
        "ByItemForTexts": by_item(True),
        "Term": {"description": "Exactly one of text, item_id, vector, moment_id; negative "
                                "weights subtract.", "oneOf": terms},
        "UploadTerm": {"description": "A Term, or an image term naming an uploaded file part.",
                       "oneOf": [*terms, _term("image", text(
                           200, description="Name of another part of this multipart request, "
                                            "holding the image."))]},
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
                        "rate": {"type": "number"}, "eta": nullable({"type": "number"})}},
                    "summary": nullable({"type": "object", "properties": {
                        "retried": {"type": "integer", "description":
                                    "Unchanged skipped files read again (retry_skipped)."},
                        "recovered": {"type": "integer", "description":
                                      "Files skipped before and indexed now."},
                        "recoverable": {"type": "array", "description":
                                        "Skipped files under the root that a setting or "
                                        "package change might index.",
                                        "items": {"type": "object",
                                                  "required": ["reason", "count", "remedy"],
                                                  "properties": {
                                                      "reason": {"type": "string"},
                                                      "count": {"type": "integer"},
                                                      "remedy": {"type": "string"}}}}}}),
                    "error": nstr,
                    "created_at": nstr, "updated_at": nstr}},
        "Session": {"type": "object", "required": ["active", "expires_at", "key_required"],
                    "properties": {
                        "active": {"type": "boolean",
                                   "description": "A valid session cookie was sent."},
                        "expires_at": nullable({"type": "integer", "description":
                                                 "Its expiry, in Unix seconds."}),
                        "key_required": {"type": "boolean", "description":
                                         "Reads need a key or a session on this server."}}},
        "Health": {"type": "object", "required": ["status", "images", "texts", "model"],
                   "properties": {"status": {"type": "string", "enum": ["ok"]},
                                  "images": {"type": "integer"}, "texts": {"type": "integer"},
                                  "model": {"type": "object", "properties": {
                                      "name": {"type": "string"},
                                      "pretrained": {"type": "string"},
                                      "dim": {"type": "integer"},
                                      "precision": {
                                          "type": "string",
                                          "enum": ["fp32", "fp32-ov", "bf16", "int8", "fp16"],
                                          "description": "How this server's encoder runs the "
                                          "forward pass (CLIPSEARCH_PRECISION)."}}},
                                  "index": {"type": "object"}}},
    }
