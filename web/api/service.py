"""The service itself: health (counts and model, for load balancers and people) and
the OpenAPI document. Neither needs a key; health loads the model if it is not yet
loaded, so a 200 means searches can be answered.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from search.errors import SearchError

from ..openapi import document
from .common import current_runtime

bp = Blueprint("service", __name__, url_prefix="/api")


@bp.get("/health")
def health():
    svc = current_runtime().service()
    st = svc.library.store.stats()
    index = {t: ({"kind": i.kind, "vectors": len(i)} if i is not None else None)
             for t, i in svc.library.indexes.items()}
    return jsonify({"status": "ok", "images": st["images_indexed"], "texts": st["texts"],
                    "model": svc.encoder.identity.to_dict(), "index": index})


@bp.get("/openapi.json")
def openapi():
    # With the model loaded the document states the exact length of a raw query vector.
    try:
        dim = current_runtime().service().encoder.dim
    except SearchError:
        dim = None
    return jsonify(document(dim))
