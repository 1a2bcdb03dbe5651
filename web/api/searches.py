"""Search routes: text to images, image to images or texts, and combined queries.

Each route parses its input into :class:`~search.service.Term` values and
:class:`~search.options.SearchOptions`; :func:`web.search_runner.run_search` does the
rest for all of them, so the result pages have one shape.
"""
from __future__ import annotations

import json

import numpy as np
from flask import Blueprint, jsonify, request

from search.errors import BadRequest, NotFound
from search.options import (FILTER_KEYS, MAX_TERMS, OPTION_KEYS, SearchOptions, check_keys,
                            item_id_param, moment_id_param, parse_options, str_param, text_param,
                            weight_param)
from search.service import Term

from ..auth import requires_key
from ..ratelimit import rate_limited
from ..search_runner import run_search
from .common import (SEARCH_ARGS, current_runtime, json_body, multipart_parts, part_text,
                     query_args)

bp = Blueprint("searches", __name__, url_prefix="/api")

MAX_VECTOR = 4096
COMBINED_KEYS = ("terms", "filters", "target", *OPTION_KEYS)
TERM_KEYS = ("text", "item_id", "vector", "image", "moment_id", "weight")


def _query_from(body: dict, flat_keys: tuple[str, ...]):
    """Options from a JSON body with flat option and filter keys."""
    check_keys(body, flat_keys + OPTION_KEYS + FILTER_KEYS, "the JSON body")
    return parse_options(body, typed=True)


def _image_query() -> tuple[Term, SearchOptions]:
    """The single term and options of /search/image and /search/texts."""
    if request.mimetype == "multipart/form-data":
        parts = multipart_parts()
        if "image" not in parts:
            raise BadRequest("the multipart part 'image' (an image file) is missing")
        data = parts["image"][0]
        if not data:
            raise BadRequest("the uploaded image is empty")
        args = query_args(*SEARCH_ARGS)
        parse_options(args)  # invalid query parameters fail even where form fields win
        # Other parts are the options (unknown ones are ignored: the form may carry more).
        form = {name: part_text(values) for name, values in parts.items() if name != "image"}
        return Term(image=data), parse_options({**args, **form})
    parse_options(query_args(*SEARCH_ARGS))  # ignored with a JSON body, but must be valid
    body = json_body()
    if "item_id" not in body:
        raise BadRequest("give item_id in the JSON body, or upload an image as multipart")
    return Term(item_id=item_id_param(body["item_id"])), _query_from(body, ("item_id",))


@bp.get("/search")
@rate_limited
@requires_key("read")
def search_text():
    args = query_args("q", *SEARCH_ARGS)
    if "q" not in args:
        raise BadRequest("the query parameter q is required")
    term = Term(text=text_param(args["q"]))
    return jsonify(run_search(current_runtime(), "images", (term,), parse_options(args)))


@bp.post("/search/image")
@rate_limited
@requires_key("read")
def search_image():
    term, opts = _image_query()
    return jsonify(run_search(current_runtime(), "images", (term,), opts))


@bp.post("/search/texts")
@rate_limited
@requires_key("read")
def search_texts():
    term, opts = _image_query()
    return jsonify(run_search(current_runtime(), "texts", (term,), opts))


def _vector(value) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_VECTOR:
        raise BadRequest(f"vector must be a list of 1 to {MAX_VECTOR} numbers")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value):
        raise BadRequest("vector must contain only numbers")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1e30):
        raise BadRequest("vector must contain only finite numbers")
    return tuple(float(x) for x in value)


def _term(raw, files) -> Term:
    if not isinstance(raw, dict):
        raise BadRequest("each term must be an object")
    check_keys(raw, TERM_KEYS, "a term")
    kinds = [k for k in ("text", "item_id", "vector", "image", "moment_id") if k in raw]
    if len(kinds) != 1:
        raise BadRequest("each term needs exactly one of text, item_id, vector, image, "
                         "moment_id")
    weight = weight_param(raw["weight"]) if "weight" in raw else 1.0
    kind = kinds[0]
    if kind == "moment_id":
        return Term(weight=weight, moment_id=moment_id_param(raw["moment_id"]))
    if kind == "text":
        return Term(weight=weight, text=text_param(raw["text"], "text"))
    if kind == "item_id":
        return Term(weight=weight, item_id=item_id_param(raw["item_id"]))
    if kind == "vector":
        return Term(weight=weight, vector=_vector(raw["vector"]))
    name = str_param(raw["image"], "image", 200)
    if files is None:
        raise BadRequest("image terms need a multipart request: a 'query' field with this JSON "
                         "and the image files as parts named by the terms")
    if name == "query" or name not in files:  # like an item_id that is not indexed
        raise NotFound(f"no uploaded image part named {name[:50]!r} in this request")
    data = files[name]
    if not data:
        raise BadRequest(f"the uploaded file {name[:50]!r} is empty")
    return Term(weight=weight, image=data)


@bp.post("/search")
@rate_limited
@requires_key("read")
def search_combined():
    query_args()
    files = None
    if request.mimetype == "multipart/form-data":
        parts = multipart_parts()
        if "query" not in parts:
            raise BadRequest("the multipart part 'query' (the JSON query) is missing")
        try:
            body = json.loads(parts["query"][0])
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise BadRequest("the multipart part 'query' is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the query must be a JSON object")
        files = {name: values[0] for name, values in parts.items() if name != "query"}
    else:
        body = json_body()
    check_keys(body, COMBINED_KEYS, "the query")
    terms = body.get("terms")
    if not isinstance(terms, list) or not 1 <= len(terms) <= MAX_TERMS:
        raise BadRequest(f"terms must be a list of 1 to {MAX_TERMS} terms")
    target = body.get("target", "images")
    if target not in ("images", "texts"):
        raise BadRequest("target must be 'images' or 'texts'")
    filters = body.get("filters", {})
    if not isinstance(filters, dict):
        raise BadRequest("filters must be an object")
    check_keys(filters, FILTER_KEYS, "filters")
    opts = parse_options({k: body[k] for k in OPTION_KEYS if k in body}, filters=filters,
                         typed=True)
    parsed = tuple(_term(t, files) for t in terms)
    return jsonify(run_search(current_runtime(), target, parsed, opts))
