"""Duplicates over HTTP: the library's groups of identical and near-identical items
(``GET /api/duplicates``) and the "not duplicates" decisions (``POST
/api/duplicates/decisions``), which later groupings respect."""
from __future__ import annotations

from flask import Blueprint, jsonify

from search.duplicates import (DEFAULT_THRESHOLD, MAX_THRESHOLD, find_duplicates,
                               forget_decisions, mark_not_duplicates)
from search.errors import BadRequest
from search.options import bool_param, check_keys, float_param, int_param, item_id_param

from ..auth import requires_key
from ..ratelimit import rate_limited
from ..items import item_json
from .common import current_runtime, json_body, query_args

bp = Blueprint("duplicates", __name__, url_prefix="/api")

MAX_DECISION_ITEMS = 1000


def group_json(group: dict) -> dict:
    """A group with its items as public item fields plus their distance to the keeper."""
    return {**group, "items": [{**item_json(i), "distance": i["distance"]}
                               for i in group["items"]]}


@bp.get("/duplicates")
@rate_limited
@requires_key("read")
def duplicates():
    args = query_args("threshold", "limit")
    threshold = float_param(args["threshold"], "threshold", 0.0, MAX_THRESHOLD) \
        if "threshold" in args else DEFAULT_THRESHOLD
    limit = int_param(args["limit"], "limit", 1, 10_000) if "limit" in args else 500
    rt = current_runtime()
    report = find_duplicates(rt.service().library.store, threshold).to_dict()
    report["groups"] = [group_json(g) for g in report["groups"][:limit]]
    return jsonify(report)


@bp.post("/duplicates/decisions")
@requires_key("write")
def decide():
    query_args()
    body = json_body()
    check_keys(body, ("item_ids", "not_duplicates"), "the JSON body")
    ids = body.get("item_ids")
    if not isinstance(ids, list) or not 2 <= len(ids) <= MAX_DECISION_ITEMS:
        raise BadRequest(f"item_ids must be a list of 2 to {MAX_DECISION_ITEMS} item ids")
    ids = [item_id_param(i, "each item id") for i in ids]
    not_dup = bool_param(body.get("not_duplicates", True), "not_duplicates", convert=False)
    store = current_runtime().service().library.store
    pairs = mark_not_duplicates(store, ids) if not_dup else forget_decisions(store, ids)
    return jsonify({"pairs": pairs, "not_duplicates": not_dup})
