"""Safe video decoding with PyAV (FFmpeg bundled in its wheels): probe, sample, one frame.

Only containers from an allowlist are opened, and the demuxer is chosen from the file's
first bytes (never by FFmpeg's own probing), so a playlist or concat file renamed
``.mp4`` cannot make FFmpeg open other files or URLs. Limits are checked from the
headers before any frame is decoded: frame size against ``max_pixels``, duration
against ``max_seconds``.

Sampling (:func:`iter_samples`) walks *slots*: slot ``k`` covers the times around
``k / fps``, and the first decoded frame falling in a slot stands for it. Three ways to
get there, chosen per video from its keyframe index (:func:`decode_mode`):

* ``keyframes`` — the container's index shows a keyframe at least once per slot: only
  keyframes are decoded (``skip_frame=NONKEY``), and where keyframes are much denser
  than slots (all-intra video) the demuxer seeks from slot to slot;
* ``sequential`` — sparse keyframes (a long GOP, or no index, as in most WebM files):
  every frame is decoded, without the in-loop deblocking filter, which costs quality
  that a 224-pixel sample never shows.

Frames are scaled by swscale straight to the size the model needs (area averaging) and
turned upright by their display rotation. Nothing here holds more than one frame.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UnsupportedMedia, VideoError

#: File name extensions discovered as videos (``.ts`` is left out: TypeScript sources).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
    ".m2ts", ".mts", ".ogv", ".flv", ".wmv", ".asf",
})
#: format label -> MIME type of the file route
VIDEO_MIME_TYPES = {
    "MP4": "video/mp4", "MOV": "video/quicktime", "3GP": "video/3gpp", "MKV": "video/x-matroska",
    "WEBM": "video/webm", "AVI": "video/x-msvideo", "MPEG": "video/mpeg",
    "MPEG-TS": "video/mp2t", "OGV": "video/ogg", "FLV": "video/x-flv", "WMV": "video/x-ms-wmv",
}
_MOV_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
SIGNATURE_SIDE = 16  # side of the colour thumbnail that frame differences are measured on


def sniff_container(head: bytes) -> tuple[str, str] | None:
    """``(FFmpeg demuxer, format label)`` from a file's first bytes; None if not a video
    container we open."""
    if head[4:8] in _MOV_ATOMS:
        brand = head[8:12]
        if brand == b"qt  ":
            return "mov", "MOV"
        if brand[:3] == b"3gp" or brand[:3] == b"3g2":
            return "mov", "3GP"
        return "mov", "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska", "WEBM" if b"webm" in head[:64] else "MKV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi", "AVI"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg", "MPEG"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts", "MPEG-TS"
    if len(head) > 196 and head[4] == 0x47 and head[196] == 0x47:  # M2TS: 4-byte prefix
        return "mpegts", "MPEG-TS"
    if head[:4] == b"OggS":
        return "ogg", "OGV"
    if head[:4] == b"FLV\x01":
        return "flv", "FLV"
    if head[:16] == _ASF_GUID:
        return "asf", "WMV"
    return None


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, checked against the limits."""

    format: str
    codec: str
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # degrees the stored frames are turned counterclockwise for display
    duration: float  # seconds
    captured_at: dt.datetime | None
    camera: str | None
    keyframe_interval: float | None  # mean seconds between keyframes (container index)
    start: float  # presentation time of the first frame, seconds (subtracted from frame times)


def _ffmpeg_errors():
    import av
    return (av.FFmpegError, EOFError, OSError, ValueError, IndexError, UnicodeDecodeError)


@contextlib.contextmanager
def open_container(path: str):
    """``(input container, format label)`` of ``path``, opened with the demuxer its first
    bytes name.
    Raises :class:`VideoError` (empty, corrupt) or :class:`UnsupportedMedia`."""
    import av
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise VideoError(f"unreadable: {e.strerror or e}") from None
    if not head:
        raise VideoError("empty file")
    sniffed = sniff_container(head)
    if sniffed is None:
        raise UnsupportedMedia("not a video in an allowed container (unrecognised)")
    demuxer, label = sniffed
    try:
        container = av.open(path, format=demuxer, metadata_errors="replace")
    except _ffmpeg_errors() as e:
        raise VideoError(f"corrupt video: unreadable {label} container ({_short(e)})") from None
    try:
        yield container, label
    finally:
        container.close()


def _short(e: BaseException) -> str:
    """The error's own words, without the file name FFmpeg appends (the report names it)."""
    text = (getattr(e, "strerror", None) or str(e)).strip() or type(e).__name__
    return text.replace("\n", " ")[:200]


def video_stream(container):
    """The first video stream that is not cover art; VideoError when there is none."""
    for s in container.streams.video:
        if not int(getattr(s.disposition, "value", s.disposition) or 0) & 0x400:  # attached_pic
            return s
    if container.streams.audio:
        raise VideoError("no video stream (audio only)")
    raise VideoError("no video stream")


def _creation_time(meta: dict) -> dt.datetime | None:
    """Capture time from container metadata: QuickTime's local creationdate first (it
    carries the camera's offset; kept as local time like EXIF), else creation_time (UTC)."""
    for key in ("com.apple.quicktime.creationdate", "creation_time", "date"):
        raw = str(meta.get(key) or "").strip()
        if not raw:
            continue
        try:
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            continue
        if key != "com.apple.quicktime.creationdate" and when.tzinfo is not None:
            when = when.astimezone(dt.timezone.utc)
        if when.year < 1971:  # cameras with no clock write 1904/1970 epochs
            continue
        return when.replace(tzinfo=None, microsecond=0)
    return None


def _camera(meta: dict) -> str | None:
    make = str(meta.get("com.apple.quicktime.make") or meta.get("make") or "").strip()
    model = str(meta.get("com.apple.quicktime.model") or meta.get("model") or "").strip()
    if make and model.lower().startswith(make.lower()):
        camera = model
    else:
        camera = " ".join(p for p in (make, model) if p)
    return camera[:200] or None


def _keyframe_interval(stream, duration: float) -> float | None:
    try:
        entries = stream.index_entries
        keys = [e.timestamp for e in entries if e.is_keyframe]
    except Exception:  # an index PyAV cannot read: decode sequentially
        return None
    if len(entries) < 2 or not keys:
        return None
    if len(keys) == 1:
        return duration or None
    return float((keys[-1] - keys[0]) * stream.time_base) / (len(keys) - 1)


def _stream_start(stream) -> float:
    if stream.start_time is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base))


def probe_video(path: str, *, max_pixels: int, max_seconds: float) -> VideoInfo:
    """Open ``path``, check it against the limits and decode its first frame.

    Raises :class:`VideoError` (empty, corrupt, no video stream, no frames, too large,
    too long) or :class:`UnsupportedMedia`; the message is the reason a skipped file is
    reported with."""
    with open_container(path) as (c, label):
        v = video_stream(c)
        cc = v.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w * h > max_pixels:
            raise VideoError(f"too large: {w}x{h} = {w * h} pixels exceeds the limit of "
                             f"{max_pixels}")
        duration = None
        if v.duration is not None and v.duration > 0:
            duration = float(v.duration * v.time_base)
        elif c.duration is not None and c.duration > 0:
            duration = c.duration / 1_000_000
        if duration is not None and duration > max_seconds:
            raise VideoError(f"too long: {duration:.0f} s exceeds the limit of "
                             f"{max_seconds:.0f} s")
        try:
            first = next(iter(c.decode(v)), None)
        except _ffmpeg_errors() as e:
            raise VideoError(f"corrupt video: {_short(e)}") from None
        if first is None:
            raise VideoError("zero length: the video has no frames")
        if not duration:
            raise VideoError("zero length: the container states no duration")
        w, h = first.width, first.height
        if w * h > max_pixels or w <= 0 or h <= 0:
            raise VideoError(f"too large: {w}x{h} = {w * h} pixels exceeds the limit of "
                             f"{max_pixels}")
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        if rotation in (90, 270):
            w, h = h, w
        meta = {**dict(v.metadata or {}), **dict(c.metadata or {})}
        return VideoInfo(format=label, codec=(cc.name or "?")[:32], width=w,
                         height=h, rotation=rotation, duration=duration,
                         captured_at=_creation_time(meta), camera=_camera(meta),
                         keyframe_interval=_keyframe_interval(v, duration),
                         start=_stream_start(v))


def decode_mode(info: VideoInfo, fps: float) -> str:
    """``keyframes`` when the index shows a keyframe at least once per sampling slot,
    else ``sequential`` (see the module docstring)."""
    ki = info.keyframe_interval
    return "keyframes" if ki is not None and ki <= 1.05 / fps else "sequential"


def slot_count(info: VideoInfo, fps: float) -> int:
    """How many sampling slots the video has (at least one)."""
    return max(1, math.ceil(info.duration * fps - 1e-6))


@dataclass
class Sample:
    """One sampled frame: its time (seconds), its pixels (uint8 RGB, upright, shortest side
    ``short_side``) and the slot it stands for."""

    t: float
    pixels: np.ndarray
    slot: int


def _scaled_size(w: int, h: int, short_side: int) -> tuple[int, int]:
    if w <= h:
        return short_side, max(1, round(short_side * h / w))
    return max(1, round(short_side * w / h)), short_side


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    turns = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)  # counterclockwise quarter turns
    return np.ascontiguousarray(np.rot90(arr, turns)) if turns else arr


def _to_rgb(frame, short_side: int, rotation: int) -> np.ndarray:
    """The frame as upright RGB, its shortest side scaled down to ``short_side`` (the
    shortest side does not depend on the rotation)."""
    w, h = frame.width, frame.height
    sw, sh = (w, h) if min(w, h) <= short_side else _scaled_size(w, h, short_side)
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
    return _upright(rgb, rotation)


def iter_samples(path: str, info: VideoInfo, *, fps: float, first_slot: int, end_slot: int,
                 short_side: int, mode: str | None = None) -> Iterator[Sample]:
    """The samples of slots ``[first_slot, end_slot)``, at most one per slot, in time order.

    Raises :class:`VideoError` when decoding fails part-way (a corrupt stream)."""
    mode = mode or decode_mode(info, fps)
    step = 1.0 / fps
    lead = step / 2 if mode == "keyframes" else 1e-3
    seek_each = mode == "keyframes" and (info.keyframe_interval or step) < step / 2
    with open_container(path) as (c, _):
        v = video_stream(c)
        cc = v.codec_context
        cc.thread_count = 1  # decoder processes run side by side already
        cc.options = {"skip_loop_filter": "all"}
        if mode == "keyframes":
            cc.skip_frame = "NONKEY"
        tb = v.time_base

        def seek(slot: int) -> None:
            target = max(0.0, slot * step - lead) + info.start
            if target > 0:
                c.seek(int(target / tb), stream=v, backward=True, any_frame=False)

        try:
            seek(first_slot)
            last = first_slot - 1
            for frame in c.decode(v):
                if frame.pts is None:
                    continue
                t = max(0.0, float(frame.pts * tb) - info.start)
                slot = math.floor((t + lead) / step)
                if slot <= last or slot < first_slot:
                    continue
                if slot >= end_slot:
                    break
                yield Sample(t, _to_rgb(frame, short_side, info.rotation), slot)
                last = slot
                if seek_each and slot + 1 < end_slot:
                    seek(slot + 1)
        except _ffmpeg_errors() as e:
            raise VideoError(f"corrupt video: {_short(e)}") from None


def frame_at(path: str, t: float, *, max_side: int, max_pixels: int,
             max_seconds: float) -> Image.Image:
    """The upright frame shown at ``t`` seconds (the last one if ``t`` is past the end),
    scaled to fit ``max_side``. Raises VideoError / UnsupportedMedia."""
    info = probe_video(path, max_pixels=max_pixels, max_seconds=max_seconds)
    t = min(max(0.0, t), info.duration)
    with open_container(path) as (c, _):
        v = video_stream(c)
        v.codec_context.thread_count = 1
        tb = v.time_base
        best = None
        try:
            if t > 0:
                c.seek(int((t + info.start) / tb), stream=v, backward=True, any_frame=False)
            for frame in c.decode(v):
                if frame.pts is None:
                    continue
                if best is not None and float(frame.pts * tb) - info.start > t + 1e-3:
                    break
                best = frame
        except _ffmpeg_errors() as e:
            if best is None:
                raise VideoError(f"corrupt video: {_short(e)}") from None
        if best is None:
            raise VideoError("zero length: the video has no frames")
        w, h = best.width, best.height
        scale = min(1.0, max_side / max(w, h))
        rgb = best.reformat(width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                            format="rgb24", interpolation="AREA").to_ndarray()
    return Image.fromarray(_upright(rgb, info.rotation))


def signature(pixels: np.ndarray) -> np.ndarray:
    """A ``16x16`` colour thumbnail (uint8) of a sample: what frame differences compare."""
    img = Image.fromarray(pixels).resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.BOX)
    return np.asarray(img, dtype=np.uint8)
