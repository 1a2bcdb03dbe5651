"""Items as the API shows them, and their files and thumbnails on disk.

Clients never see an absolute server path: an item is shown with its path
relative to its library root. Files are reached only through an item id; the
stored path is resolved with ``realpath`` and must still lie inside the item's
own (resolved) root, so a file later replaced by a symlink leading out of the
root, or a root that moved, gives 404 rather than a foreign file. The file is
then opened as checked (web/paths.py: component by component, following no
symlink), so swapping any folder on the path for a symlink between the check and
the open is refused too. Thumbnails go through the same check and open before
the cache is looked at: a cached thumbnail is served only while its file is.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile

from PIL import Image

from search.errors import NotFound, SearchError
from search.media.images import decode_image
from search.media.video import VIDEO_MIME_TYPES, frame_at
from search.schema import SIDECAR, sidecar_source
from search.store import STATUS_INDEXED, MediaItem

from .paths import check_file, open_checked, relative_path

log = logging.getLogger(__name__)

THUMB_SIZES = (64, 128, 256, 512, 1024)
THUMB_QUALITY = 85
MAX_SOURCE_BYTES = 512 * 1024 * 1024  # refuse to read anything larger into memory

MIME_TYPES = {
    "JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff", "HEIF": "image/heif",
    "AVIF": "image/avif", **VIDEO_MIME_TYPES,
}


def item_json(item: dict) -> dict:
    """Public fields of a ``MediaItem.to_dict()``."""
    i = item["id"]
    return {
        "id": i, "name": os.path.basename(item["path"]),
        "path": relative_path(item["path"], item["root"]),
        "width": item["width"], "height": item["height"], "format": item["format"],
        "size": item["size"], "captured_at": item["captured_at"], "camera": item["camera"],
        "lens": item.get("lens"), "description": item.get("description"),
        "keywords": item.get("keywords"),
        "thumbnail_url": f"/api/items/{i}/thumbnail", "file_url": f"/api/items/{i}/file",
        "media": item.get("media") or "image", "duration": item.get("duration"),
        "codec": item.get("codec"), "rotation": item.get("rotation"),
    }


def moment_json(item_id: int, moment: dict) -> dict:
    """A moment of a video: its times, its thumbnail at the representative frame, and the
    file URL with a media-fragment start time (what an HTML5 player starts from)."""
    out = {k: moment[k] for k in ("id", "t_start", "t_end", "t_rep") if k in moment}
    if "score" in moment:
        out["score"] = moment["score"]
    out["thumbnail_url"] = f"/api/items/{item_id}/thumbnail?t={moment['t_rep']:g}"
    out["play_url"] = f"/api/items/{item_id}/file#t={moment['t_start']:g}"
    return out


def hit_json(hit) -> dict:
    """An image or video hit (``search.service.Hit``) as ITEM_HIT: the item plus its scores
    and the query words found in its words (by field); a video hit adds its best moment
    (``t_start``, ``t_end``, ``moment``; its thumbnail is that moment's) and ``moments``,
    other matching moments of the same video."""
    out = item_json({"id": hit.id, **hit.item})
    rank = None if hit.rank_score is None else round(float(hit.rank_score), 6)
    body = {"id": hit.id, "score": round(float(hit.score), 6), "rank_score": rank,
            "matched": hit.matched, **{k: v for k, v in out.items() if k != "id"}}
    moment = hit.item.get("moment")
    if moment is not None:
        best = moment_json(hit.id, moment)
        body.update(t_start=best["t_start"], t_end=best["t_end"], moment=best,
                    moments=[moment_json(hit.id, m) for m in hit.item.get("moments", ())],
                    thumbnail_url=best["thumbnail_url"], play_url=best["play_url"])
    if hit.similar is not None:  # collapse=true: the hits folded into this one
        body["similar_count"] = len(hit.similar)
        body["similar"] = [{**item_json({"id": m["id"], **m["item"]}), "score": m["score"],
                            "distance": m["distance"]} for m in hit.similar]
    return body


def text_hit_json(hit, items: dict[int, MediaItem]) -> dict:
    """A text hit; a sidecar caption's source names its image relative to the root."""
    source = hit.item["source"]
    item_id = hit.item.get("item_id")
    if source.startswith(SIDECAR):
        owner = items.get(item_id) if item_id is not None else None
        # No row for its image: the bare label, never an absolute server path.
        source = (sidecar_source(relative_path(owner.path, owner.root)) if owner is not None
                  else "sidecar")
    return {"id": hit.id, "score": round(float(hit.score), 6), "text": hit.item["text"],
            "source": source, "item_id": item_id}


def indexed_item(store, item_id: int) -> MediaItem:
    """The item if it exists and is indexed; NotFound otherwise (skipped items are private)."""
    item = store.get_item(item_id)
    if item.status != STATUS_INDEXED:
        raise NotFound(f"no item with id {item_id}")
    return item


def open_file(item: MediaItem):
    """The indexed item's file, opened read-only after the root check (a binary file
    object; the caller closes it).

    Raises NotFound when the file is gone, is not a regular file, resolves outside its
    root (a symlink swapped in after indexing, a moved root), or changed between the
    check and the open (a folder on its path swapped for a symlink).
    """
    missing = NotFound(f"the file of item {item.id} is not available")
    checked = check_file(item.path, item.root)
    if checked is None:
        raise missing
    try:
        fd = open_checked(checked)
    except OSError:
        log.warning("item %d: its file changed between the check and the open; refused",
                    item.id)
        raise missing from None
    return os.fdopen(fd, "rb")


def _opened_path(f) -> str:
    """A path that names the already opened file ``f`` itself, for decoders that take a
    path: its /proc entry on Linux, /dev/fd elsewhere (macOS, the BSDs)."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else f"/dev/fd/{f.fileno()}"


def mime_type(item: MediaItem) -> str:
    return MIME_TYPES.get((item.format or "").upper(), "application/octet-stream")


def thumb_size(requested: int) -> int:
    """The smallest cached size >= ``requested`` (bounds the cache to a few sizes per item)."""
    for s in THUMB_SIZES:
        if requested <= s:
            return s
    return THUMB_SIZES[-1]


def thumb_etag(item: MediaItem, size: int, t: int | None = None) -> str:
    basis = f"{item.id}:{item.content_hash or ''}:{item.size}:{item.mtime}:{size}"
    if t is not None:
        basis += f":t{t}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def thumbnail(item: MediaItem, size: int, cache_dir: str, *, max_pixels: int,
              t: float | None = None, max_seconds: float = 6 * 3600) -> tuple[str, str]:
    """Path of a cached JPEG thumbnail (longest side ``size``) and its ETag; made on a miss.

    For a video, the frame shown at ``t`` seconds (cached per whole second, which bounds
    the cache to a few files per second of video and size). The cache file name carries
    the ETag, so a re-indexed (changed) file gets a new thumbnail. Written to a temporary
    name and renamed: concurrent workers never serve half a file. Raises NotFound when
    the source cannot be read or decoded.
    """
    video = item.media == "video"
    second = int(max(0.0, t or 0.0)) if video else None
    etag = thumb_etag(item, size, second)
    folder = os.path.join(cache_dir, "thumbs", f"{item.id % 256:02x}")
    stem = f"{item.id}-{size}" + (f"@{second}" if video else "")
    path = os.path.join(folder, f"{stem}-{etag}.jpg")
    with open_file(item) as src:  # the root check comes first, cached or not
        if os.path.isfile(path):
            return path, etag
        try:
            if video:
                # Only indexed videos get here: the indexer has decoded this file before.
                # The decoder reads the descriptor we checked, not the path again.
                img = frame_at(_opened_path(src), float(second), max_side=size,
                               max_pixels=max_pixels, max_seconds=max_seconds)
            else:
                if os.fstat(src.fileno()).st_size > MAX_SOURCE_BYTES:
                    raise NotFound(f"the file of item {item.id} is too large for a thumbnail")
                img = decode_image(src.read(), max_pixels=max_pixels, draft_size=size).image
        except SearchError as e:
            log.warning("thumbnail of item %d failed: %s", item.id, e.message)
            raise NotFound(f"no thumbnail for item {item.id}: {e.message}") from None
        except OSError:
            raise NotFound(f"the file of item {item.id} is not available") from None
    img.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    os.makedirs(folder, exist_ok=True)
    _remove_stale(folder, stem, keep=path)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path, etag


def _remove_stale(folder: str, stem: str, *, keep: str) -> None:
    prefix = f"{stem}-"
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(".jpg") and os.path.join(folder, name) != keep:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def drop_thumbnails(item_id: int, cache_dir: str) -> None:
    """Remove every cached thumbnail of an item (after it is deleted)."""
    folder = os.path.join(cache_dir, "thumbs", f"{item_id % 256:02x}")
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(f"{item_id}-"):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
