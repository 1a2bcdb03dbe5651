"""Indexing over HTTP: start a job on a folder inside a configured library root,
then follow it by id. The jobs themselves run in web/jobs.py.

Both routes need a write key: a job reads folders of the server and writes the
library, and its status names those folders. A job holds the store's writer lock: while
another writer (a job in any worker, a CLI ``index``) holds it, starting one is a 409
naming that writer.
"""
from __future__ import annotations

import os

from flask import Blueprint, jsonify

from search.errors import BadRequest, Forbidden, NotFound
from search.options import check_keys, str_param

from ..auth import requires_key
from ..jobs import public_summary
from ..paths import inside_root
from .common import current_runtime, json_body, query_args, row_id

bp = Blueprint("indexing", __name__, url_prefix="/api")


@bp.post("/index")
@requires_key("write")
def index_start():
    query_args()
    rt = current_runtime()
    body = json_body()
    check_keys(body, ("root", "retry_skipped"), "the JSON body")
    if "root" not in body:
        raise BadRequest("give the folder to index as 'root'")
    root = str_param(body["root"], "root", 4096)
    retry_skipped = body.get("retry_skipped", False)
    if not isinstance(retry_skipped, bool):
        raise BadRequest("retry_skipped must be true or false")
    if not os.path.isabs(root):
        raise BadRequest("root must be an absolute path")
    if not rt.settings.library_roots:
        raise Forbidden("this server has no library roots configured (CLIPSEARCH_LIBRARY_ROOTS)")
    real = os.path.realpath(root)
    if inside_root(real, *rt.settings.library_roots) is None:
        raise Forbidden("root is not one of the configured library roots or inside one")
    if not os.path.isdir(real):
        raise NotFound("root is not an existing folder")
    job_id = rt.jobs.start(real, retry_skipped=retry_skipped)
    resp = jsonify({"job_id": job_id})
    resp.status_code = 202
    resp.headers["Location"] = f"/api/jobs/{job_id}"
    return resp


@bp.get("/jobs/<int:job_id>")
@requires_key("write")
def job_status(job_id: int):
    query_args()
    job = current_runtime().jobs.get(row_id(job_id, "job"))
    if job.get("summary"):
        job["summary"] = public_summary(job["summary"], job["roots"])
    return jsonify(job)
