"""Safe image decoding shared by the indexer and query uploads.

Only formats from an allowlist are decoded, and the format is checked from the
header *before* pixel data is decoded. A pixel count above the configured limit
is refused from the header too, so a 600-megapixel PNG costs a few bytes of
reading, not gigabytes of memory. Truncated files are errors (Pillow's
``LOAD_TRUNCATED_IMAGES`` stays off). EXIF orientation is applied.

Reduced-size decoding when the caller needs fewer pixels (``draft_size``), with the
memory of one decode bounded by :data:`DECODE_MEMORY_BOUND` for any image the pixel
limit admits (:mod:`.reduced`): JPEGs by Pillow's draft mode (DCT scaling), other
formats above :data:`~.reduced.VIPS_MIN_PIXELS` by libvips' thumbnailing, which
decodes in a stream of rows (PNG, TIFF) or at a reduced scale (WebP, HEIF) and never
holds the full picture. What neither way can bound is refused with its reason.

What the file says about itself is kept for search (:mod:`.metadata`): capture time,
camera, lens, description and keywords (EXIF, Windows XP tags, IPTC, XMP, PNG text).
"""
from __future__ import annotations

import datetime as dt
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, UnsupportedMedia
from . import reduced
from .metadata import described, header_exif

#: Pillow format names we decode. MPO is the multi-picture JPEG variant cameras write.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
HEIF_FORMATS = frozenset({"HEIF", "AVIF"})

_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_DATETIME = 0x0132
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110

_heif_registered: bool | None = None


def register_heif() -> bool:
    """Register pillow-heif's opener once if it is installed."""
    global _heif_registered
    if _heif_registered is None:
        try:
            from pillow_heif import register_heif_opener
            register_heif_opener()
            _heif_registered = True
        except ImportError:
            _heif_registered = False
    return _heif_registered


def allowed_formats() -> frozenset[str]:
    return ALLOWED_FORMATS | HEIF_FORMATS if register_heif() else ALLOWED_FORMATS


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
          (b"<svg", "SVG"), (b"<?xml", "XML/SVG"), (b"%PDF", "PDF"))


def sniff_format(data: bytes) -> str | None:
    """Format suggested by the first bytes, without decoding; None if unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF"
    head = data[:16].lstrip()
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _openers(allowed: frozenset[str]) -> list[str]:
    """Pillow opener ids for the allowed formats (MPO files are opened by the JPEG opener)."""
    Image.init()
    return sorted(f for f in allowed if f in Image.OPEN)


@dataclass
class DecodedImage:
    """An RGB image ready for preprocessing, with what we learnt from the file."""

    image: Image.Image
    format: str
    width: int  # after EXIF orientation, at full resolution
    height: int
    captured_at: dt.datetime | None
    camera: str | None
    lens: str | None = None
    description: str | None = None
    keywords: str | None = None  # "; "-separated


def _exif_facts(img: Image.Image) -> tuple[dt.datetime | None, str | None, int]:
    exif = header_exif(img)
    if not exif:
        return None, None, 1
    captured = None
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    raw = sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)
    if isinstance(raw, str):
        try:
            captured = dt.datetime.strptime(raw.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            captured = None
    make = str(exif.get(_TAG_MAKE) or "").strip().strip("\x00")
    model = str(exif.get(_TAG_MODEL) or "").strip().strip("\x00")
    if make and model.lower().startswith(make.lower()):
        camera = model
    else:
        camera = " ".join(p for p in (make, model) if p) or None
    orientation = exif.get(0x0112, 1)
    return captured, (camera[:200] if camera else None), orientation if isinstance(orientation, int) else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB with transparent areas on white, so that logos/stickers keep their shape."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    return img.convert("RGB")


def _allow_pillow(max_pixels: int) -> None:
    """Pillow refuses images over twice its own ``MAX_IMAGE_PIXELS`` (89 MP) when opening
    them; our limit (checked from the header below) must decide, also when raised above
    that. Only ever raised, so other callers keep at least Pillow's default."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = None,
                 formats: frozenset[str] | None = None) -> DecodedImage:
    """Decode ``data`` safely.

    Raises :class:`UnsupportedMedia` for a format outside the allowlist (or not an
    image at all) and :class:`ImageError` for empty, truncated, corrupt or
    too-large images. The message is the reason a skipped file is reported with.
    """
    if not data:
        raise ImageError("empty file")
    allowed = formats or allowed_formats()
    _allow_pillow(max_pixels)
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; Pillow still errors above twice its default.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_openers(allowed))
    except UnidentifiedImageError:
        sniffed = sniff_format(data)
        if sniffed in allowed:
            raise ImageError(f"corrupt image: unreadable {sniffed} header") from None
        raise UnsupportedMedia("not an image in an allowed format "
                               f"({sniffed or 'unrecognised'})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too large: {e}") from None
    except Exception as e:
        raise ImageError(f"corrupt image: unreadable header ({e})") from None
    fmt = img.format or "?"
    if fmt not in allowed:
        raise UnsupportedMedia(f"image format {fmt} is not allowed")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid image size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(f"too large: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    captured, camera, orientation = _exif_facts(img)
    lens, description, keywords = described(img)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if draft_size and reduced.use_vips(img, fmt):
        rgb = reduced.vips_reduced(data, img, fmt, draft_size)
        return DecodedImage(rgb, fmt, w, h, captured, camera, lens, description, keywords)
    reduced.check_memory(img, fmt, jpeg_draft=bool(draft_size))
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if draft_size and fmt in ("JPEG", "MPO"):
            img.draft("RGB", (draft_size, draft_size))
        # The header check above already bounds the pixel count that load() allocates.
        img.load()
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb(img)
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError("truncated image") from None
        raise ImageError(f"corrupt image: {msg}") from None
    except Exception as e:  # Pillow raises a zoo of types on hostile input
        raise ImageError(f"corrupt image: {type(e).__name__}: {e}") from None
    return DecodedImage(rgb, fmt, w, h, captured, camera, lens, description, keywords)
