"""Generated near-duplicates for the duplicate tests and benchmark: pictures of the sample
gallery (indexer.gallery) and copies of some of them, re-encoded, resized, cropped by a few
percent, EXIF-stripped or byte-identical."""
from __future__ import annotations

import io
import os
import shutil

from PIL import Image

KINDS = ("reencoded", "resized", "cropped", "stripped", "identical")


def save_original(png: str, dest: str) -> None:
    """The gallery PNG as a camera-like JPEG with EXIF (date, camera)."""
    exif = Image.Exif()
    exif[0x0132] = "2024:05:01 10:00:00"
    exif[0x010F] = "TestCam"
    exif[0x0110] = "TestCam One"
    Image.open(png).convert("RGB").save(dest, "JPEG", quality=95, exif=exif.tobytes())


def make_copy(original: str, dest: str, kind: str, *, crop: float = 0.03,
              scale: float = 0.5, quality: int = 70) -> None:
    """A near-duplicate (or identical copy) of the JPEG ``original`` at ``dest``."""
    if kind == "identical":
        shutil.copyfile(original, dest)
        return
    img = Image.open(original)
    exif = img.getexif().tobytes()
    img = img.convert("RGB")
    w, h = img.size
    if kind == "reencoded":
        img.save(dest, "JPEG", quality=quality, exif=exif)
    elif kind == "resized":
        img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BICUBIC).save(
            dest, "JPEG", quality=90, exif=exif)
    elif kind == "cropped":
        c = max(1, int(round(min(w, h) * crop)))
        img.crop((c, c, w - c, h - c)).save(dest, "JPEG", quality=90, exif=exif)
    elif kind == "stripped":  # the same picture without its metadata
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        with open(dest, "wb") as f:
            f.write(buf.getvalue())
    else:
        raise ValueError(kind)


def write_library(root: str, *, distinct: int, copies: dict[int, str], size: int = 256,
                  seed: int | None = None) -> tuple[list[str], dict[str, str]]:
    """``distinct`` gallery pictures as JPEGs under ``root``/orig and, for each index in
    ``copies``, a copy of that kind under ``root``/copies. Returns (originals, copy -> its
    original)."""
    from indexer.gallery import write_gallery
    src = os.path.join(root, ".src")
    pngs = write_gallery(src, count=distinct, size=size, seed=seed)
    os.makedirs(os.path.join(root, "orig"), exist_ok=True)
    os.makedirs(os.path.join(root, "copies"), exist_ok=True)
    originals = []
    for n, png in enumerate(pngs):
        dest = os.path.join(root, "orig", f"p{n:05d}.jpg")
        save_original(png, dest)
        originals.append(dest)
    pairs = {}
    for n, kind in copies.items():
        dest = os.path.join(root, "copies", f"p{n:05d}-{kind}.jpg")
        make_copy(originals[n], dest, kind)
        pairs[dest] = originals[n]
    shutil.rmtree(src)
    return originals, pairs
