"""Find the image and video files under library roots.

Hidden files and folders (a name starting with ``.``) are skipped, and so is
any symlink whose target lies outside its root (or cannot be resolved). A
symlinked folder inside the root is followed once (loops are cut).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

from ..media.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def image_extensions() -> frozenset[str]:
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS if heif_available() else IMAGE_EXTENSIONS


def media_extensions() -> frozenset[str]:
    """What the indexer looks for: image extensions and :data:`VIDEO_EXTENSIONS`."""
    return image_extensions() | VIDEO_EXTENSIONS


def is_video_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, as reached under the root (not resolved through symlinks)
    root: str
    size: int
    mtime: float
    caption_mtime: float | None = None  # of the sidecar photo.txt next to photo.jpg, if any


def _inside(path: str, root_real: str) -> bool:
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def walk(root: str, extensions: frozenset[str] | None = None, *,
         passed_over: dict[str, int] | None = None) -> Iterator[FoundFile]:
    """Yield media files (images and videos) under ``root`` (absolute path), sorted per
    folder for determinism. ``passed_over["heif"]`` counts HEIC/HEIF files left out because
    pillow-heif is missing."""
    exts = extensions or media_extensions()
    root = os.path.abspath(root)
    root_real = os.path.realpath(root)
    seen_dirs: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            log.warning("cannot list %s: %s", folder, e)
            continue
        subdirs = []
        # Sidecar captions are noticed from this listing: only captioned images pay a stat.
        texts = {e.name for e in entries if e.name.endswith(".txt")}
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(target, root_real) or not os.path.exists(target):
                        log.debug("skipping symlink leading outside %s: %s", root, entry.path)
                        continue
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    continue
                ext = os.path.splitext(entry.name)[1].lower()
                if ext not in exts:
                    if ext in HEIF_EXTENSIONS and passed_over is not None:
                        passed_over["heif"] = passed_over.get("heif", 0) + 1
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as e:
                log.warning("cannot stat %s: %s", entry.path, e)
                continue
            caption = os.path.splitext(entry.name)[0] + ".txt"
            caption_mtime = None
            if caption in texts:
                try:
                    caption_mtime = os.stat(os.path.join(folder, caption)).st_mtime
                except OSError:
                    pass
            yield FoundFile(entry.path, root, st.st_size, st.st_mtime, caption_mtime)
        stack.extend(reversed(subdirs))


def resolve_root(path: str) -> str:
    """Absolute, normalised root path; raises FileNotFoundError / NotADirectoryError."""
    p = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(p):
        raise FileNotFoundError(f"library root {path!r} does not exist")
    if not os.path.isdir(p):
        raise NotADirectoryError(f"library root {path!r} is not a folder")
    return p
