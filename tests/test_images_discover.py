"""Safe decoding (search/images.py), the worker's decode step, and file discovery."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from conftest import require_module
from imagegen import png_bomb
from PIL import Image

from search.encoder import Preprocess
from search.errors import ImageError, UnsupportedMedia
from search.ingest.decode import decode_file
from search.ingest.discover import walk
from search.media.images import decode_image, sniff_format

LIMIT = 50_000_000


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_decode_to_rgb(fmt):
    img = Image.new("RGB", (40, 30), (200, 20, 20))
    d = decode_image(encoded(img, fmt), max_pixels=LIMIT)
    assert d.format == fmt and (d.width, d.height) == (40, 30) and d.image.mode == "RGB"


def test_heic_when_pillow_heif_is_installed():
    require_module("pillow_heif", "pillow-heif", "pip install -e '.[heif]'")
    from search.media.images import register_heif

    assert register_heif()
    d = decode_image(encoded(Image.new("RGB", (64, 48), (0, 128, 0)), "HEIF"), max_pixels=LIMIT)
    assert d.format == "HEIF" and (d.width, d.height) == (64, 48)


def test_exif_orientation_is_applied_and_exif_facts_read():
    img = Image.new("RGB", (60, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 10, 20))  # black stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2019:05:04 10:11:12"
    d = decode_image(encoded(img, "JPEG", exif=exif.tobytes(), quality=95), max_pixels=LIMIT)
    assert (d.width, d.height) == (20, 60) and d.image.size == (20, 60)
    top = np.asarray(d.image)[:8].mean()
    assert top < 60  # the stripe is now at the top
    assert d.camera == "Canon EOS 5D" and d.captured_at.isoformat() == "2019-05-04T10:11:12"


def test_transparency_becomes_white():
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    d = decode_image(encoded(img, "PNG"), max_pixels=LIMIT)
    assert d.image.getpixel((5, 5)) == (255, 255, 255)


def test_draft_mode_decodes_big_jpegs_at_reduced_scale():
    img = Image.new("RGB", (2000, 1600), (10, 20, 30))
    d = decode_image(encoded(img, "JPEG"), max_pixels=LIMIT, draft_size=224)
    assert d.image.size[0] < 2000 and min(d.image.size) >= 224
    assert (d.width, d.height) == (2000, 1600)  # metadata keeps the real size


def test_bad_inputs_have_reasons(tmp_path):
    good = encoded(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    cases = {
        b"": (ImageError, "empty"),
        good[: len(good) // 2]: (ImageError, "truncated"),
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 10: (ImageError, "corrupt"),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>": (UnsupportedMedia, "SVG"),
        b"just some text": (UnsupportedMedia, "unrecognised"),
        encoded(Image.new("RGB", (8, 8)), "PPM"): (UnsupportedMedia, "not an image"),
    }
    for data, (err, needle) in cases.items():
        with pytest.raises(err) as e:
            decode_image(data, max_pixels=LIMIT)
        assert needle in str(e.value), (data[:20], str(e.value))
    bomb = tmp_path / "bomb.png"
    png_bomb(str(bomb))
    assert os.path.getsize(bomb) < 2_000_000
    with pytest.raises(ImageError) as e:
        decode_image(bomb.read_bytes(), max_pixels=LIMIT)
    assert "too large" in str(e.value)
    big = encoded(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError) as e:
        decode_image(big, max_pixels=1_000_000)
    assert "9000000 pixels exceeds the limit of 1000000" in str(e.value)


def test_sniffing():
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"  <svg") == "SVG"
    assert sniff_format(b"hello") is None


def test_decode_file_never_raises(tmp_path):
    prep = Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    p = tmp_path / "a.png"
    Image.new("RGB", (50, 20), (9, 9, 9)).save(p)
    (tmp_path / "a.txt").write_text("  a caption \n")
    d = decode_file(str(p), prep, LIMIT)
    assert d.pixels.shape == (32, 32, 3) and d.pixels.dtype == np.uint8
    assert d.caption == "a caption" and len(d.content_hash) == 64 and d.format == "PNG"
    missing = decode_file(str(tmp_path / "gone.png"), prep, LIMIT)
    assert missing.pixels is None and missing.skip_reason.startswith("unreadable")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    bad = decode_file(str(tmp_path / "b.jpg"), prep, LIMIT)
    assert bad.pixels is None and "not an image" in bad.skip_reason


def test_walk_skips_hidden_and_outside_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (root / "x.jpg", root / "a" / "y.PNG", root / "a" / "b" / "z.webp",
              root / ".hidden" / "h.png", root / ".dot.png", outside / "o.png"):
        p.write_bytes(b"x")
    (root / "notes.txt").write_text("no")
    os.symlink(outside / "o.png", root / "link-out.png")
    os.symlink(outside, root / "dir-out")
    os.symlink(root / "x.jpg", root / "a" / "link-in.jpg")
    os.symlink(root, root / "a" / "loop")  # a loop back to the root
    os.symlink(tmp_path / "nowhere.png", root / "dangling.png")
    found = sorted(os.path.relpath(f.path, root) for f in walk(str(root)))
    assert found == ["a/b/z.webp", "a/link-in.jpg", "a/y.PNG", "x.jpg"]
