"""Video work done in decoder processes: probe a video, then decode it chunk by chunk.

A video is never decoded in one task: :func:`probe_file` hashes the file and reads its
headers (the limits are checked there), then the parent cuts the video's sampling slots
into chunks of :data:`CHUNK_SLOTS` and each :class:`ChunkTask` decodes one of them.
Several decoder processes thus work on one long video at once, a crash costs one
chunk's retry, and what travels back is at most :data:`CHUNK_SLOTS` preprocessed samples
(about 5 MB at 224 px): memory stays flat whatever the video's length or resolution.

Everything returned is small and picklable; nothing raises for bad input.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..encoder import Preprocess
from ..errors import SearchError
from ..fileio import sha256_file
from ..media.video import VideoInfo, iter_samples, probe_video, signature, slot_count
from .decode import Decoded, decode_file, read_sidecar

CHUNK_SLOTS = 32


@dataclass
class VideoProbe:
    """A video's item fields (``decoded``, skip reason set when it cannot be indexed) and,
    when it can, its :class:`VideoInfo`."""

    decoded: Decoded
    info: VideoInfo | None = None


def probe_file(path: str, max_pixels: int, max_seconds: float) -> VideoProbe:
    """Stat, hash and probe one video file."""
    try:
        st = os.stat(path)
        digest = sha256_file(path)
    except OSError as e:
        return VideoProbe(Decoded(path, 0, 0.0, None, media="video",
                                  skip_reason=f"unreadable: {e.strerror or e}"))
    dec = Decoded(path, st.st_size, st.st_mtime, digest, media="video")
    try:
        info = probe_video(path, max_pixels=max_pixels, max_seconds=max_seconds)
    except SearchError as e:
        dec.skip_reason = e.message
        return VideoProbe(dec)
    except MemoryError:
        dec.skip_reason = "out of memory while decoding"
        return VideoProbe(dec)
    except Exception as e:  # a decoder bug must cost one file, not the job
        dec.skip_reason = f"decoder error: {type(e).__name__}: {e}"
        return VideoProbe(dec)
    dec.width, dec.height, dec.format = info.width, info.height, info.format
    dec.captured_at, dec.camera = info.captured_at, info.camera
    dec.duration, dec.codec, dec.rotation = info.duration, info.codec, info.rotation
    dec.caption = read_sidecar(path)
    return VideoProbe(dec, info)


@dataclass(frozen=True)
class ChunkTask:
    """Decode slots ``[first_slot, end_slot)`` of the video at ``path``."""

    path: str
    info: VideoInfo
    fps: float
    first_slot: int
    end_slot: int
    last: bool  # the video's final chunk


def chunk_tasks(path: str, info: VideoInfo, fps: float) -> list[ChunkTask]:
    n = slot_count(info, fps)
    starts = list(range(0, n, CHUNK_SLOTS))
    return [ChunkTask(path, info, fps, k, min(n, k + CHUNK_SLOTS), k == starts[-1])
            for k in starts]


@dataclass
class ChunkResult:
    """The samples of one chunk: times, preprocessed pixels ``(n, S, S, 3)`` and colour
    signatures ``(n, 16, 16, 3)``; or the reason the video cannot be indexed."""

    task: ChunkTask
    times: list[float] = field(default_factory=list)
    pixels: np.ndarray | None = None
    signatures: np.ndarray | None = None
    error: str | None = None


def decode_chunk(task: ChunkTask, preprocess: Preprocess) -> ChunkResult:
    out = ChunkResult(task)
    pixels, sigs = [], []
    try:
        for sample in iter_samples(task.path, task.info, fps=task.fps,
                                   first_slot=task.first_slot, end_slot=task.end_slot,
                                   short_side=preprocess.size):
            out.times.append(sample.t)
            sigs.append(signature(sample.pixels))
            pixels.append(preprocess(Image.fromarray(sample.pixels)))
    except SearchError as e:
        out.error = e.message
    except MemoryError:
        out.error = "out of memory while decoding"
    except Exception as e:  # a decoder bug must cost one file, not the job
        out.error = f"decoder error: {type(e).__name__}: {e}"
    if out.error is None and pixels:
        out.pixels = np.stack(pixels)
        out.signatures = np.stack(sigs)
    return out


def run_task(task, preprocess: Preprocess, max_pixels: int, ocr: bool = False):
    """One unit of decoder work: an image path, a :class:`ChunkTask`, or a finished
    :class:`Decoded` (a skipped video, passed through so that the stream keeps its order)."""
    if isinstance(task, ChunkTask):
        return decode_chunk(task, preprocess)
    if isinstance(task, Decoded):
        return task
    return decode_file(task, preprocess, max_pixels, ocr)
