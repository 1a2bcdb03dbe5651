"""What the OpenAPI document says about uploads in words, given to schemathesis as data.

The document declares every uploaded part (``format: binary``) as an image of one of
the allowed media types (``encoding.contentType``), which no JSON Schema keyword can
check. Schemathesis' default for ``binary`` is a few sample files (ZIP, PDF, ...) or
random bytes, all of which the server rightly answers 415; with that, every upload
would count as "a schema-valid request rejected" and no image would ever reach the
search code. This strategy draws what the document asks for instead: small real
images in each allowed format. Refusing non-images is tested on its own
(tests/test_api_safety.py).

Imported by tests/test_openapi_fuzz.py; bench/fuzz_api.py loads it into the
schemathesis CLI with ``SCHEMATHESIS_HOOKS=fuzz_hooks``.
"""
from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def _image(fmt: str, width: int, height: int, colour: tuple[int, int, int],
           other: tuple[int, int, int]) -> bytes:
    img = Image.new("RGB", (width, height), colour)
    img.paste(other, (0, 0, max(1, width // 2), max(1, height // 2)))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


_channel = st.integers(0, 255)
IMAGES = st.builds(_image, st.sampled_from(FORMATS), st.integers(1, 48), st.integers(1, 48),
                   st.tuples(_channel, _channel, _channel), st.tuples(_channel, _channel, _channel))

schemathesis.openapi.format("binary", IMAGES)
