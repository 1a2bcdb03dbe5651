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
    "AVIF": "image/avif",
}


def item_json(item: dict) -> dict:
    """Public fields of a ``MediaItem.to_dict()``."""
    i = item["id"]
    return {
        "id": i, "name": os.path.basename(item["path"]),
        "path": relative_path(item["path"], item["root"]),
        "width": item["width"], "height": item["height"], "format": item["format"],
        "size": item["size"], "captured_at": item["captured_at"], "camera": item["camera"],
        "thumbnail_url": f"/api/items/{i}/thumbnail", "file_url": f"/api/items/{i}/file",
    }


def hit_json(hit) -> dict:
    """An image hit (``search.service.Hit``) as ITEM_HIT: the item plus its score."""
    out = item_json({"id": hit.id, **hit.item})
    return {"id": hit.id, "score": round(float(hit.score), 6), **{
        k: v for k, v in out.items() if k != "id"}}


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


def mime_type(item: MediaItem) -> str:
    return MIME_TYPES.get((item.format or "").upper(), "application/octet-stream")


def thumb_size(requested: int) -> int:
    """The smallest cached size >= ``requested`` (bounds the cache to a few sizes per item)."""
    for s in THUMB_SIZES:
        if requested <= s:
            return s
    return THUMB_SIZES[-1]


def thumb_etag(item: MediaItem, size: int) -> str:
    basis = f"{item.id}:{item.content_hash or ''}:{item.size}:{item.mtime}:{size}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def thumbnail(item: MediaItem, size: int, cache_dir: str, *, max_pixels: int) -> tuple[str, str]:
    """Path of a cached JPEG thumbnail (longest side ``size``) and its ETag; made on a miss.

    The cache file name carries the ETag, so a re-indexed (changed) file gets a new
    thumbnail. Written to a temporary name and renamed: concurrent workers never
    serve half a file. Raises NotFound when the source cannot be read or decoded.
    """
    etag = thumb_etag(item, size)
    folder = os.path.join(cache_dir, "thumbs", f"{item.id % 256:02x}")
    path = os.path.join(folder, f"{item.id}-{size}-{etag}.jpg")
    with open_file(item) as src:  # the root check comes first, cached or not
        if os.path.isfile(path):
            return path, etag
        try:
            if os.fstat(src.fileno()).st_size > MAX_SOURCE_BYTES:
                raise NotFound(f"the file of item {item.id} is too large for a thumbnail")
            data = src.read()
            decoded = decode_image(data, max_pixels=max_pixels, draft_size=size)
        except SearchError as e:
            log.warning("thumbnail of item %d failed: %s", item.id, e.message)
            raise NotFound(f"no thumbnail for item {item.id}: {e.message}") from None
        except OSError:
            raise NotFound(f"the file of item {item.id} is not available") from None
    img = decoded.image
    img.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    os.makedirs(folder, exist_ok=True)
    _remove_stale(folder, item.id, size, keep=path)
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


def _remove_stale(folder: str, item_id: int, size: int, *, keep: str) -> None:
    prefix = f"{item_id}-{size}-"
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
