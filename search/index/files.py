"""On-disk format of a :class:`search.index.VectorIndex`.

Two files: ``PATH`` is the FAISS index as written by ``faiss.write_index``; ``PATH.json`` is
a sidecar holding the caller's ``meta`` (e.g. the model identity), the kind, dimension,
counts, search parameters, HNSW tombstones and the sha256 of ``PATH``.

Each file is written to a temporary name in the same directory, fsynced and moved into place
with ``os.replace`` (index first, sidecar second, then the directory is fsynced). A crash in
between leaves a new index next to an old sidecar; :func:`read_index_files` sees the sha256
disagree and raises :class:`IndexMismatch` instead of loading a torn pair.

The ``ondisk`` kind (:mod:`search.index.ondisk`) writes its delta and sidecar the same way
and shares :func:`write_faiss_atomic`, :func:`json_meta`, :func:`sidecar_path` and
:func:`read_sidecar_json` from here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np

from ..errors import BadRequest, IndexMismatch, NotFound
from ..fileio import fsync_dir, sha256_file, write_json_atomic
from .kinds import KINDS, load_faiss, structure_kind
from .params import IndexParams

FORMAT = "clipsearch-faiss"
FORMAT_VERSION = 1


def sidecar_path(path: str) -> str:
    return os.fspath(path) + ".json"


def json_meta(meta) -> dict:
    """A JSON round-trip copy of ``meta``; BadRequest if it is not a JSON-able dict."""
    if not isinstance(meta, dict):
        raise BadRequest(f"meta must be a dict, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"meta is not JSON-serialisable: {exc}") from None


def write_faiss_atomic(faiss_index, path: str) -> str:
    """Write a FAISS index to a temporary file beside ``path``, fsync it, rename it into
    place; returns its sha256. A crash leaves the old file or the new one, never a torn one."""
    faiss = load_faiss()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        faiss.write_index(faiss_index, tmp)
        digest = sha256_file(tmp, sync=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def write_index_files(index, path: str, meta: dict) -> None:
    """Save ``index`` (a VectorIndex, already locked against mutation) at ``path``."""
    faiss = load_faiss()
    meta = json_meta(meta)
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    digest = write_faiss_atomic(index._index, path)
    sidecar = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": index.kind,
        "target_kind": index.target_kind,
        "dim": index.dim,
        "count": len(index),
        "ntotal": int(index._index.ntotal),
        "sha256": digest,
        "faiss_version": getattr(faiss, "__version__", "unknown"),
        "params": dataclasses.asdict(index.params),
        "tombstones": index._dead.tolist(),
        "meta": meta,
    }
    write_json_atomic(sidecar_path(path), sidecar)
    fsync_dir(directory)


def read_sidecar_json(path: str) -> tuple[str, dict]:
    """``(sidecar path, its JSON)`` of the index saved at ``path``. Raises NotFound when
    neither file exists, IndexMismatch when the sidecar is missing or unreadable."""
    side = sidecar_path(path)
    if not os.path.exists(path) and not os.path.exists(side):
        raise NotFound(f"no vector index at {path}")
    try:
        with open(side, encoding="utf-8") as fh:
            return side, json.load(fh)
    except (OSError, ValueError) as exc:
        raise IndexMismatch(f"index sidecar {side} is missing or unreadable: {exc}") from None


def read_index_files(cls, path: str, use_gpu):
    """Load what :func:`write_index_files` wrote; returns ``(cls instance, meta)``."""
    faiss = load_faiss()
    path = os.fspath(path)
    side, sidecar = read_sidecar_json(path)
    try:
        if sidecar.get("format") != FORMAT or sidecar.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {sidecar.get('format')!r} v{sidecar.get('version')!r}")
        kind, target_kind = sidecar["kind"], sidecar["target_kind"]
        dim, count, ntotal = int(sidecar["dim"]), int(sidecar["count"]), int(sidecar["ntotal"])
        if kind not in KINDS or target_kind not in KINDS:
            raise ValueError(f"kind {kind!r} / {target_kind!r}")
        params = IndexParams(**sidecar["params"])
        dead = np.asarray(sidecar["tombstones"], dtype=np.int64).reshape(-1)
        expected_sha, meta = str(sidecar["sha256"]), sidecar["meta"]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise IndexMismatch(f"index sidecar {side} is malformed: {exc}") from None
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise IndexMismatch(f"index file {path} is missing or unreadable: {exc}") from None
    if digest != expected_sha:
        raise IndexMismatch(f"index file {path} does not match its sidecar (sha256 differs): "
                            "a torn or interrupted write? rebuild the index")
    try:
        raw = faiss.read_index(path)
        found_kind = structure_kind(raw)
    except (RuntimeError, ValueError) as exc:
        raise IndexMismatch(f"index file {path} cannot be read by FAISS: {exc}") from None
    problems = []
    if found_kind != kind:
        problems.append(f"kind {found_kind} != {kind}")
    if raw.d != dim:
        problems.append(f"dim {raw.d} != {dim}")
    if raw.ntotal != ntotal or ntotal - dead.size != count:
        problems.append(f"count {raw.ntotal - dead.size} != {count}")
    if dead.size and (kind != "hnsw" or dead.min() < 0 or dead.max() >= ntotal):
        problems.append("tombstones out of range")
    if problems:
        raise IndexMismatch(f"index file {path} disagrees with its sidecar: "
                            + "; ".join(problems))
    index = cls._from_parts(raw, target_kind=target_kind, params=params,
                            dead=np.unique(dead), use_gpu=use_gpu)
    return index, meta
