"""Videos of known content for the tests, written with PyAV.

Pictures come from the bundled model's own scene renderer (``indexer.training.scenes``:
emoji glyphs and coloured shapes that ``clipsearch-mini`` knows), held for a given number
of seconds each: e.g. a red circle for 0-4 s, a cat face for 4-9 s, a flag for 9-15 s.
Options add what real files have: a display-rotation flag (the pixels are stored turned
the other way, so that the upright picture is what the model must see), a variable frame
rate, an audio track.
"""
from __future__ import annotations

import fractions
import random

import av
import numpy as np
from PIL import Image

from indexer.training import data
from indexer.training.scenes import Item, Scene, render

CODECS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "libopus"),
          ".webm": ("libvpx-vp9", "libopus")}


def glyph_index(name: str) -> int:
    glyphs = data.load_glyphs()
    for i, g in enumerate(glyphs):
        if g.name == name:
            return i
    raise KeyError(name)


def picture(kind: str, size: int = 240, seed: int = 0, **kw) -> Image.Image:
    """``picture("shape", shape="circle", colour="red")`` or ``picture("glyph",
    name="cat face")``: one rendered scene, ``size`` px square, on a white background."""
    glyphs = data.load_glyphs()
    if kind == "glyph":
        scene = Scene("glyph", (Item(glyph=glyph_index(kw["name"])),), background="white")
    else:
        scene = Scene("shape", (Item(shape=kw["shape"], colour=kw["colour"], size="large"),),
                      background="white")
    return render(scene, [g.image for g in glyphs], size, random.Random(seed))


def story(size: int = 240) -> list[tuple[float, Image.Image]]:
    """The tests' standard video: red circle 0-4 s, cat face 4-9 s, flag 9-15 s."""
    return [(4.0, picture("shape", size, shape="circle", colour="red")),
            (5.0, picture("glyph", size, name="cat face")),
            (6.0, picture("glyph", size, name="flag of Japan"))]


def _frame_rgb(img: Image.Image, width: int, height: int, rng: np.random.Generator
               ) -> np.ndarray:
    """``img`` centred on a white ``width x height`` canvas, with a little sensor noise."""
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    pic = img.resize((min(width, height),) * 2, Image.BILINEAR)
    canvas.paste(pic, ((width - pic.width) // 2, (height - pic.height) // 2))
    arr = np.asarray(canvas, dtype=np.int16)
    arr = arr + rng.integers(-3, 4, size=arr.shape, dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_video(path: str, scenes: list[tuple[float, Image.Image]], *, fps: int = 12,
                size: tuple[int, int] = (320, 240), rotation: int | None = None,
                audio: bool = False, vfr: bool = False, gop: int | None = None,
                creation_time: str | None = None, seed: int = 0) -> float:
    """Write ``scenes`` (seconds, picture) as a video; returns its duration in seconds.

    ``rotation``: the display rotation flag (degrees counterclockwise); frames are stored
    turned clockwise by as much. ``vfr``: frame intervals alternate between 1 and 2.5
    frame periods. The codec follows the extension (:data:`CODECS`)."""
    ext = path[path.rfind("."):].lower()
    vcodec, acodec = CODECS[ext]
    rng = np.random.default_rng(seed)
    out = av.open(path, "w")
    if creation_time:
        out.metadata["creation_time"] = creation_time
    width, height = size
    if rotation in (90, 270):
        width, height = height, width  # stored sideways
    stream = out.add_stream(vcodec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = fractions.Fraction(1, 1000)
    stream.codec_context.time_base = fractions.Fraction(1, 1000)  # VFR: ms timestamps
    if gop:
        stream.codec_context.gop_size = gop
    if vcodec == "libvpx-vp9":
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
    else:
        stream.options = {"preset": "veryfast"}
    if rotation:
        stream.set_display_rotation(rotation)
    astream = _audio_stream(out, acodec) if audio else None  # every stream before the header
    packets = []
    total = sum(sec for sec, _ in scenes)
    t, i, start = 0.0, 0, 0.0
    for seconds, img in scenes:
        upright = _frame_rgb(img, *size, rng) if rotation is None else None
        while t < start + seconds - 1e-9:
            if rotation:
                rgb = np.rot90(_frame_rgb(img, *size, rng), -(rotation // 90))
            else:
                rgb = upright if i % 2 else _frame_rgb(img, *size, rng)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = stream.time_base
            packets.extend(stream.encode(frame))
            step = 1.0 / fps if not vfr or (i // 5) % 2 == 0 else 2.5 / fps
            t += step
            i += 1
        start += seconds
    packets.extend(stream.encode())
    if astream is not None:
        packets.extend(_audio_packets(astream, total))
    out.mux(packets)
    out.close()
    return total


def _audio_stream(out, codec: str):
    a = out.add_stream(codec, rate=48000)
    a.layout = "mono"
    a.format = "fltp" if codec == "aac" else "flt"
    return a


def _audio_packets(a, seconds: float) -> list:
    rate = 48000
    n = 1024 if a.codec_context.name == "aac" else 960
    packets = []
    for k in range(int(seconds * rate / n)):
        tone = (0.1 * np.sin(2 * np.pi * 440 * (np.arange(n) + k * n) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format=a.format.name, layout="mono")
        frame.sample_rate = rate
        frame.pts = k * n
        packets.extend(a.encode(frame))
    packets.extend(a.encode())
    return packets


def write_audio_only(path: str, seconds: float = 3.0) -> None:
    """An .mp4 with one AAC stream and no video."""
    out = av.open(path, "w", format="mp4")
    packets = _audio_packets(_audio_stream(out, "aac"), seconds)
    out.mux(packets)
    out.close()
