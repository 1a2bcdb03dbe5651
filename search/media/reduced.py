"""Decoding big pictures at a reduced size within a bounded memory.

A decoder process must stay under :data:`DECODE_MEMORY_BOUND` of resident memory
for any image the pixel limit admits. Pillow decodes the whole picture and then
converts it (a 168-megapixel RGBA PNG took 3.1 GB: ~19 bytes per pixel across the
decode, the RGBA copy, the white background and the composite), so pictures above
:data:`VIPS_MIN_PIXELS` that are not JPEGs go to libvips (``pyvips``): its
thumbnailer streams PNG and TIFF rows through the shrink and asks the WebP and
HEIF decoders for a reduced scale, so memory depends on the output size, not the
input. Below that size Pillow is faster (measured: a 640x480 PNG 7.8 ms with
Pillow, 9.4 ms with libvips; a 12-megapixel RGBA PNG 515 ms with Pillow, 278 ms
with libvips; docs/benchmarks.md).

Formats that neither library can decode in a stream (interlaced PNG, GIF, BMP) are
decoded whole; if that would need more than the bound, the file is refused with
the reason (``ImageError``), never half-decoded.

PNG, TIFF and GIF rows are composited on white at full resolution (as the Pillow path
does) and box-shrunk by an integer factor to a shortest side between
:data:`OVERSAMPLE` and twice that times the size the caller needs; WebP and HEIF are
thumbnailed to :data:`OVERSAMPLE` times that size. The caller's own resize (the model's
bicubic preprocessing) makes the final pixels, as after JPEG draft decoding.
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ..errors import ImageError

log = logging.getLogger(__name__)

#: the stated bound on one decoder's resident memory (process included)
DECODE_MEMORY_BOUND = 512 * 2**20
#: what a decoder process holds before decoding (interpreter, numpy, Pillow, libvips)
PROCESS_BASE = 120 * 2**20
#: pictures with more pixels than this (JPEG aside) are reduced by libvips
VIPS_MIN_PIXELS = 4_000_000
OVERSAMPLE = 2
#: formats libvips decodes without holding the full picture (PNG only when not interlaced)
STREAMED = frozenset({"PNG", "TIFF", "WEBP", "HEIF", "AVIF"})
VIPS_FORMATS = STREAMED | {"GIF"}
#: bytes per pixel of a whole-picture Pillow decode, conversions included (measured ~18.5
#: for RGBA -> RGB on white); libvips decoding a non-streamed picture whole needs ~2 x 4
PILLOW_BYTES_PER_PIXEL = 20
VIPS_WHOLE_BYTES_PER_PIXEL = 8

_vips = None


def _pyvips():
    """The pyvips module, or None when it (or its libvips) is not installed."""
    global _vips
    if _vips is None:
        try:
            import pyvips
            pyvips.cache_set_max(0)  # no operation cache: each decode is used once
            # one thread: decoders already run one process per core, and libvips' worker
            # threads each hold row buffers (peaks varied 200-345 MB with its default)
            pyvips.concurrency_set(1)
            _vips = pyvips
        except (ImportError, OSError) as e:
            log.warning("pyvips is not available (%s): big pictures are decoded by Pillow, "
                        "whose memory is not bounded", e)
            _vips = False
    return _vips or None


def _interlaced(img: Image.Image) -> bool:
    return bool(img.info.get("interlace"))


def use_vips(img: Image.Image, fmt: str) -> bool:
    w, h = img.size
    if fmt in ("JPEG", "MPO") or w * h <= VIPS_MIN_PIXELS or fmt not in VIPS_FORMATS:
        return False
    return _pyvips() is not None


def check_memory(img: Image.Image, fmt: str, *, jpeg_draft: bool) -> None:
    """Refuse a whole-picture Pillow decode that would exceed the bound."""
    w, h = img.size
    if fmt in ("JPEG", "MPO") and jpeg_draft:
        w, h = max(1, w // 8), max(1, h // 8)  # DCT scaling to at most 1/8 first
    need = PROCESS_BASE + w * h * PILLOW_BYTES_PER_PIXEL
    if need > DECODE_MEMORY_BOUND:
        raise ImageError(f"too large to decode within the decoder memory bound: {img.size[0]}x"
                         f"{img.size[1]} {fmt} needs ~{need >> 20} MB, the bound is "
                         f"{DECODE_MEMORY_BOUND >> 20} MB")


def vips_reduced(data: bytes, img: Image.Image, fmt: str, size: int) -> Image.Image:
    """RGB Pillow image of ``data`` with its shortest side about ``OVERSAMPLE * size``,
    transparency on white, EXIF orientation applied."""
    pyvips = _pyvips()
    w, h = img.size
    if fmt not in STREAMED or (fmt == "PNG" and _interlaced(img)):
        need = PROCESS_BASE + w * h * VIPS_WHOLE_BYTES_PER_PIXEL
        if need > DECODE_MEMORY_BOUND:
            kind = "interlaced PNG" if fmt == "PNG" else fmt
            raise ImageError(f"too large to decode within the decoder memory bound: {w}x{h} "
                             f"{kind} is decoded whole (~{need >> 20} MB), the bound is "
                             f"{DECODE_MEMORY_BOUND >> 20} MB")
    short = OVERSAMPLE * size
    try:
        if fmt in ("WEBP", "HEIF", "AVIF"):
            # the decoder itself scales down (shrink-on-load); thumbnail asks it to
            probe = pyvips.Image.new_from_buffer(data, "", access="sequential")
            pw, ph = probe.width, probe.height
            if probe.get_typeof("orientation") and probe.get("orientation") in (5, 6, 7, 8):
                pw, ph = ph, pw
            target_w = short if pw <= ph else max(1, round(short * pw / ph))
            # fail_on goes to the loader: a truncated file is an error, not a half picture
            im = pyvips.Image.thumbnail_buffer(data, min(target_w, pw), height=10_000_000,
                                               size="down", option_string="fail_on=truncated")
            if im.hasalpha():
                im = im.flatten(background=[255] * (im.bands - 1))
        else:
            # rows stream through: composite on white at full resolution (as Pillow's path
            # does), then an integer box shrink to a shortest side of short..2*short
            im = pyvips.Image.new_from_buffer(data, "", access="sequential",
                                              fail_on="truncated")
            if im.hasalpha():
                im = im.flatten(background=[255] * (im.bands - 1))
            factor = max(1, min(im.width, im.height) // short)
            if factor > 1:
                im = im.shrink(factor, factor)
            im = im.autorot()
        if im.interpretation not in ("srgb", "b-w") or im.format != "uchar":
            im = im.colourspace("srgb")
        if im.format != "uchar":
            im = im.cast("uchar")
        if im.bands == 1:
            im = im.bandjoin([im, im])
        arr = np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                         shape=(im.height, im.width, im.bands))
    except pyvips.Error as e:
        text = str(e).lower()
        if "truncat" in text or "premature" in text or "read error" in text:
            raise ImageError("truncated image") from None
        detail = "; ".join(m.strip() for m in str(e).splitlines() if m.strip())[:200]
        raise ImageError(f"corrupt image: {detail or 'libvips could not decode it'}") from None
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")
