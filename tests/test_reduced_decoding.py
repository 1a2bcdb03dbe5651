"""Big pictures are decoded at a reduced size within the decoder memory bound."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from search.encoder import Preprocess
from search.errors import ImageError
from search.media import reduced
from search.media.images import decode_image

ROOT = os.path.join(os.path.dirname(__file__), "..")
PREP = Preprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _clipart(w: int, h: int) -> Image.Image:
    """Transparent clip art: a coloured disc and a bar on a transparent background."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w, 4), np.uint8)
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2
    a[disc] = (220, 40, 40, 255)
    a[h // 8:h // 4, :, :] = (20, 90, 200, 160)
    a[..., 1] = np.where(disc, (xx * 255 // w).astype(np.uint8), a[..., 1])
    return Image.fromarray(a, "RGBA")


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_png() -> tuple[Image.Image, bytes]:
    img = _clipart(2600, 2000)  # 5.2 MP: above the libvips threshold
    return img, _png(img, compress_level=1)


def test_big_transparent_png_goes_through_libvips_and_matches_pillow(big_png):
    img, data = big_png
    assert img.size[0] * img.size[1] > reduced.VIPS_MIN_PIXELS
    dec = decode_image(data, max_pixels=10**9, draft_size=224)
    assert (dec.width, dec.height, dec.format) == (2600, 2000, "PNG")
    assert 2 * 224 <= min(dec.image.size) < 4 * 224 and dec.image.mode == "RGB"
    ours = PREP(dec.image).astype(np.float32)
    # the full-size Pillow path, transparency on white as _to_rgb does
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    ref = PREP(Image.alpha_composite(white, img).convert("RGB")).astype(np.float32)
    assert np.abs(ours - ref).mean() < 1.5  # of 255: resampling differences only
    assert ours[112, 112].tolist() == pytest.approx(ref[112, 112].tolist(), abs=6)


def test_without_draft_size_the_full_picture_is_returned(big_png):
    img, data = big_png
    assert decode_image(data, max_pixels=10**9).image.size == img.size


def test_exif_orientation_applies_on_the_libvips_path():
    img = _clipart(3000, 1800).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif, compress_level=1)
    dec = decode_image(buf.getvalue(), max_pixels=10**9, draft_size=224)
    assert (dec.width, dec.height) == (1800, 3000)
    assert dec.image.size[0] < dec.image.size[1]  # portrait, as displayed


def test_truncated_big_png_is_an_error_not_a_half_picture(big_png):
    _, data = big_png
    with pytest.raises(ImageError) as e:
        decode_image(data[: len(data) // 2], max_pixels=10**9, draft_size=224)
    assert "truncated" in e.value.message or "corrupt" in e.value.message


def test_what_cannot_be_bounded_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(reduced, "DECODE_MEMORY_BOUND", reduced.PROCESS_BASE + 2**20)
    data = _png(_clipart(2600, 2000), compress_level=1)
    buf = io.BytesIO()
    Image.new("RGB", (1200, 1000), (9, 9, 9)).save(buf, "BMP")  # not for libvips, decoded whole
    with pytest.raises(ImageError) as e:
        decode_image(buf.getvalue(), max_pixels=10**9, draft_size=224)
    assert "memory bound" in e.value.message
    import pyvips

    interlaced = pyvips.Image.new_from_buffer(data, "").pngsave_buffer(interlace=True,
                                                                     compression=1)
    with pytest.raises(ImageError) as e:
        decode_image(interlaced, max_pixels=10**9, draft_size=224)
    assert "interlaced PNG" in e.value.message


@pytest.mark.slow
def test_a_40_megapixel_png_decodes_in_a_bounded_process(tmp_path):
    """The decoder's peak resident memory for a big RGBA PNG stays far below the bound."""
    path = tmp_path / "huge.png"
    code = f"""
import pyvips
W, H = 8000, 5000
xy = pyvips.Image.xyz(W, H)
alpha = ((xy[0] - W / 2) ** 2 + (xy[1] - H / 2) ** 2 < (H / 2.5) ** 2).ifthenelse(255, 0)
rgb = pyvips.Image.black(W, H, bands=3).new_from_image([30, 144, 255])
rgb.bandjoin(alpha.cast("uchar")).copy(interpretation="srgb").pngsave({str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    probe = f"""
import sys
sys.path.insert(0, {ROOT!r})
from search.encoder import Preprocess
from search.ingest.decode import decode_file
d = decode_file({str(path)!r}, Preprocess(224, (0.5,) * 3, (0.5,) * 3), 178_956_970)
assert d.skip_reason is None and d.pixels.shape == (224, 224, 3), d.skip_reason
# VmHWM: this process's peak (ru_maxrss would carry the forking parent's across exec)
print([int(x.split()[1]) // 1024 for x in open("/proc/self/status") if x.startswith("VmHWM")][0])
"""
    out = subprocess.run([sys.executable, "-c", probe], check=True, timeout=300,
                         capture_output=True, text=True)
    peak_mb = int(out.stdout.strip())
    assert peak_mb < reduced.DECODE_MEMORY_BOUND >> 20, peak_mb
    assert peak_mb < 250, peak_mb  # Pillow needed ~19 bytes/pixel: 760 MB here


def test_png_metadata_is_read_without_decoding_the_pixels():
    # Pillow's getexif() on a PNG decodes the whole picture looking for a late eXIf chunk;
    # the metadata readers must not ask it when the header has none (it doubled the decode
    # cost of big clip art)
    from PIL import PngImagePlugin

    from search.media.metadata import described, header_exif

    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "a red disc over a blue bar")
    buf = io.BytesIO()
    _clipart(600, 400).save(buf, "PNG", pnginfo=info)
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.tile, "opened, not yet decoded"
    assert header_exif(img) is None
    lens, description, keywords = described(img)
    assert description == "a red disc over a blue bar"
    assert img.tile, "reading the metadata decoded the pixels"
    # a picture big enough for the reduced-size path keeps its words too
    big = io.BytesIO()
    _clipart(2600, 1700).save(big, "PNG", pnginfo=info)
    assert 2600 * 1700 > reduced.VIPS_MIN_PIXELS
    decoded = decode_image(big.getvalue(), max_pixels=10**8, draft_size=PREP.size)
    assert decoded.format == "PNG" and decoded.width == 2600
    assert decoded.description == "a red disc over a blue bar"
