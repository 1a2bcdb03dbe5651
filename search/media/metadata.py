"""What an image file says about itself, beyond pixels: lens, description and keywords.

Read from the places cameras, phones and photo managers write them, first found wins for
the description, keywords are merged (case-insensitively de-duplicated):

* EXIF: ``LensModel`` / ``LensMake`` (Exif IFD), ``ImageDescription``, ``UserComment``;
* Windows XP tags: ``XPTitle``, ``XPComment``, ``XPSubject``, ``XPKeywords`` (UTF-16);
* IPTC: Caption/Abstract (2:120), Keywords (2:25);
* XMP: ``dc:description``, ``dc:title``, ``dc:subject`` (read with a regular expression:
  no XML parser, so no entity expansion);
* PNG text chunks: ``Description``, ``Title``, ``Comment``, ``Keywords``.

Malformed metadata never costs the image: every reader returns nothing on error.
"""
from __future__ import annotations

import re

from PIL import Image

MAX_DESCRIPTION = 2000
MAX_KEYWORDS = 2000
_EXIF_IFD = 0x8769
_TAG_DESCRIPTION = 0x010E
_TAG_USER_COMMENT = 0x9286
_TAG_LENS_MAKE = 0xA433
_TAG_LENS_MODEL = 0xA434
_XP_TITLE, _XP_COMMENT, _XP_KEYWORDS, _XP_SUBJECT = 0x9C9B, 0x9C9C, 0x9C9E, 0x9C9F
_XMP_BAG = r"<dc:{0}\b[^>]*>(.*?)</dc:{0}>"
_XMP_LI = re.compile(r"<rdf:li\b[^>]*>(.*?)</rdf:li>", re.S)
_XML_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'"}


def _clean(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return " ".join(str(value).replace("\x00", " ").split())


def _xp(value) -> str:
    """A Windows XP tag: UTF-16LE bytes (Pillow gives bytes or a tuple of byte values)."""
    if isinstance(value, tuple):
        value = bytes(v & 0xFF for v in value)
    if isinstance(value, bytes):
        return _clean(value.decode("utf-16-le", errors="replace"))
    return _clean(value or "")


def _user_comment(value) -> str:
    if not isinstance(value, bytes) or len(value) < 8:
        return _clean(value or "") if isinstance(value, str) else ""
    head, body = value[:8], value[8:]
    if head.startswith(b"UNICODE"):
        for enc in ("utf-16-le", "utf-16-be"):
            text = body.decode(enc, errors="replace")
            if text.isprintable() or not body:
                return _clean(text)
        return ""
    if head.startswith(b"ASCII") or head == b"\x00" * 8:
        return _clean(body)
    return ""


def _xml_text(s: str) -> str:
    s = re.sub(r"<[^>]+>", " ", s)
    for k, v in _XML_ENTITIES.items():
        s = s.replace(k, v)
    return _clean(s)


def _xmp(img: Image.Image) -> tuple[list[str], list[str]]:
    """(descriptions and titles, subjects) from an XMP packet."""
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if not raw:
        return [], []
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    text = text[:200_000]

    def bag(name: str) -> list[str]:
        m = re.search(_XMP_BAG.format(name), text, re.S)
        if not m:
            return []
        items = _XMP_LI.findall(m.group(1)) or [m.group(1)]
        return [t for t in (_xml_text(i) for i in items) if t]
    return bag("description") + bag("title"), bag("subject")


def _iptc(img: Image.Image) -> tuple[list[str], list[str]]:
    from PIL import IptcImagePlugin

    info = IptcImagePlugin.getiptcinfo(img) or {}

    def values(key) -> list[str]:
        v = info.get(key)
        if v is None:
            return []
        return [t for t in (_clean(x) for x in (v if isinstance(v, list) else [v])) if t]
    return values((2, 120)), values((2, 25))


def _split_keywords(text: str) -> list[str]:
    return [k.strip() for k in re.split(r"[;,]", text) if k.strip()]


def header_exif(img: Image.Image):
    """The EXIF of an opened image without decoding its pixels; None when there is none.

    Pillow's PNG plugin decodes the whole picture looking for an eXIf chunk after the
    pixels (where none of the files we met keep it): a 9-megapixel clip-art PNG paid
    ~120 ms of CPU for that on top of its reduced-size decode, so a PNG whose header
    has no EXIF has none here. Malformed EXIF gives None too: it must not lose the image.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return None
    try:
        return img.getexif() or None
    except Exception:
        return None


def described(img: Image.Image) -> tuple[str | None, str | None, str | None]:
    """``(lens, description, keywords)`` of an opened image; None where it says nothing.
    Keywords are joined with ``"; "``."""
    descriptions: list[str] = []
    keywords: list[str] = []
    lens = None
    exif = header_exif(img)
    if exif:
        try:
            sub = exif.get_ifd(_EXIF_IFD)
        except Exception:
            sub = {}
        make, model = _clean(sub.get(_TAG_LENS_MAKE) or ""), _clean(sub.get(_TAG_LENS_MODEL) or "")
        lens = (model if make and model.lower().startswith(make.lower())
                else " ".join(p for p in (make, model) if p)) or None
        descriptions += [_clean(exif.get(_TAG_DESCRIPTION) or ""),
                         _user_comment(sub.get(_TAG_USER_COMMENT)),
                         _xp(exif.get(_XP_TITLE)), _xp(exif.get(_XP_COMMENT)),
                         _xp(exif.get(_XP_SUBJECT))]
        keywords += _split_keywords(_xp(exif.get(_XP_KEYWORDS)))
    for reader in (_iptc, _xmp):
        try:
            d, k = reader(img)
        except Exception:
            continue
        descriptions += d
        keywords += k
    for key in ("Description", "Title", "Comment"):
        if isinstance(img.info.get(key), (str, bytes)):
            descriptions.append(_clean(img.info[key]))
    if isinstance(img.info.get("Keywords"), (str, bytes)):
        keywords += _split_keywords(_clean(img.info["Keywords"]))
    seen: set[str] = set()
    desc = []
    for d in descriptions:
        if d and d.casefold() not in seen and d.strip(" .") not in ("", "OLYMPUS DIGITAL CAMERA"):
            seen.add(d.casefold())
            desc.append(d)
    uniq: list[str] = []
    for k in keywords:
        if k.casefold() not in {u.casefold() for u in uniq}:
            uniq.append(k)
    return ((lens or None) and lens[:200], " / ".join(desc)[:MAX_DESCRIPTION] or None,
            "; ".join(uniq)[:MAX_KEYWORDS] or None)
