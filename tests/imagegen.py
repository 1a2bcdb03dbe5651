"""Generated image libraries for tests: good files in every format, and every kind of bad file."""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

GOOD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class GeneratedLibrary:
    root: str
    good: list[str] = field(default_factory=list)  # files that must be indexed
    bad: dict[str, str] = field(default_factory=dict)  # path -> expected reason category
    ignored: list[str] = field(default_factory=list)  # never even considered (hidden, outside)


def pattern(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A distinct image: random colour blocks plus a gradient, so vectors differ."""
    cells = rng.integers(0, 256, size=(rng.integers(2, 6), rng.integers(2, 6), 3), dtype=np.uint8)
    img = Image.fromarray(cells).resize((w, h), Image.NEAREST)
    grad = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    arr = np.clip(np.asarray(img, np.float32) + grad, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def save_image(img: Image.Image, path: str, fmt: str, *, exif_date: str | None = None,
               orientation: int | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if fmt == "JPEG":
        exif = Image.Exif()
        if exif_date:
            exif[0x0132] = exif_date
            exif[0x010F] = "TestCam"
            exif[0x0110] = "TestCam Model 1"
        if orientation:
            exif[0x0112] = orientation
        img.save(path, "JPEG", quality=85, exif=exif.tobytes())
    elif fmt == "GIF":
        second = Image.eval(img, lambda v: 255 - v)
        img.save(path, "GIF", save_all=True, append_images=[second], duration=100)
    else:
        img.save(path, fmt)


def png_bomb(path: str, side: int = 25_000) -> None:
    """A valid 1-bit PNG of side x side pixels (625 MP at the default) that is only ~100 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                + chunk(b"IEND", b""))


def make_library(root: str, n_good: int = 500, *, seed: int = 0, with_bad: bool = True,
                 big_side: int | None = None) -> GeneratedLibrary:
    """Write ``n_good`` images in mixed formats and sizes under ``root`` (in sub-folders),
    plus corrupt, truncated, empty, mislabelled and over-limit files when ``with_bad``.

    ``big_side``: side of a flat PNG that exceeds a test's pixel limit (skip as too large).
    """
    rng = np.random.default_rng(seed)
    lib = GeneratedLibrary(root)
    for i in range(n_good):
        fmt = GOOD_FORMATS[i % len(GOOD_FORMATS)]
        w, h = int(rng.integers(24, 160)), int(rng.integers(24, 160))
        folder = os.path.join(root, f"album{i % 5}", f"part{i % 3}")
        path = os.path.join(folder, f"img{i:04d}{EXT[fmt]}")
        date = f"2020:0{1 + i % 9}:1{i % 10} 12:00:00" if fmt == "JPEG" else None
        save_image(pattern(rng, w, h), path, fmt, exif_date=date,
                   orientation=6 if fmt == "JPEG" and i % 4 == 1 else None)
        lib.good.append(path)
    if not with_bad:
        return lib
    bad = os.path.join(root, "bad")
    os.makedirs(bad, exist_ok=True)
    # corrupt: a JPEG header then garbage
    buf = io.BytesIO()
    pattern(rng, 64, 64).save(buf, "JPEG")
    data = buf.getvalue()
    p = os.path.join(bad, "corrupt.jpg")
    with open(p, "wb") as f:
        f.write(data[:200] + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)))
    lib.bad[p] = "corrupt"
    # truncated PNG
    buf = io.BytesIO()
    pattern(rng, 120, 120).save(buf, "PNG")
    p = os.path.join(bad, "truncated.png")
    with open(p, "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    lib.bad[p] = "truncated"
    # zero bytes
    p = os.path.join(bad, "empty.png")
    open(p, "wb").close()
    lib.bad[p] = "empty"
    # not an image, named .jpg
    p = os.path.join(bad, "notes.jpg")
    with open(p, "w") as f:
        f.write("this is a text file, not a photo\n" * 20)
    lib.bad[p] = "not an image"
    # over the pixel limit: a 625-megapixel PNG bomb (tiny on disk)
    p = os.path.join(bad, "bomb.png")
    png_bomb(p)
    lib.bad[p] = "too large"
    if big_side:
        p = os.path.join(bad, "big.png")
        Image.new("L", (big_side, big_side), 128).save(p)
        lib.bad[p] = "too large"
    # ignored: hidden file and folder, non-image extension
    os.makedirs(os.path.join(root, ".hidden"), exist_ok=True)
    for p in (os.path.join(root, ".hidden", "secret.png"), os.path.join(root, ".dot.png")):
        pattern(rng, 32, 32).save(p)
        lib.ignored.append(p)
    with open(os.path.join(root, "readme.md"), "w") as f:
        f.write("not indexed")
    return lib
