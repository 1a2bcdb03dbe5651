"""The decode -> encode stream for libraries with videos: images and video samples share
the encoder's batches, and each video leaves the stream as one ``(Decoded, vector)`` pair
carrying its moments.

Paths are taken in blocks. The videos of a block are probed first (hash and headers, in
the decoder processes); then the block's work, images and video chunks in path order,
goes through one :func:`~.workers.window_map`, so chunks of one long video decode in
several processes at once while the forward pass runs here. A chunk that fails (a
corrupt stream part-way, a decoder that kills its process) makes its whole video a
skipped file with that reason: a video is indexed with all its moments or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .decode import Decoded
from .discover import is_video_path
from .embed import EncoderTime, StopCheck, batch_encode, crashed_decode
from .segmenting import SEGMENT_VECTOR, Segmenter
from .video_decode import ChunkResult, ChunkTask, VideoProbe, chunk_tasks, probe_file, run_task
from .workers import CRASH_REASON, WorkerPool, window_map

BLOCK_FILES = 64


@dataclass
class _Video:
    decoded: Decoded
    segmenter: Segmenter
    error: str | None = None


@dataclass
class _Frame:
    """One sample on its way to the encoder (``batch_encode`` reads and frees ``pixels``)."""

    pixels: np.ndarray | None
    video: _Video
    t: float
    sig: np.ndarray


@dataclass
class _VideoEnd:
    video: _Video
    pixels: None = field(default=None)


def crashed_probe(path: str) -> VideoProbe:
    dec = crashed_decode(path)
    dec.media = "video"
    return VideoProbe(dec)


def crashed_task(task):
    if isinstance(task, ChunkTask):
        return ChunkResult(task, error=CRASH_REASON)
    if isinstance(task, Decoded):
        return task
    return crashed_decode(task)


def _units(pool: WorkerPool | None, preprocess, paths: Sequence[str], *, window: int,
           max_pixels: int, fps: float, max_seconds: float, block: int, segment_vector: str,
           should_stop: StopCheck | None = None, ocr: bool = False):
    stop = should_stop or (lambda: False)
    if not any(is_video_path(p) for p in paths):  # images only: one stream, no blocks
        yield from window_map(pool, run_task, paths, window, preprocess, max_pixels, ocr,
                              on_crash=crashed_task, should_stop=should_stop)
        return
    for b in range(0, len(paths), block):
        if stop():
            return
        part = paths[b:b + block]
        videos = [p for p in part if is_video_path(p)]
        probes = dict(zip(videos, window_map(pool, probe_file, videos, window, max_pixels,
                                             max_seconds, on_crash=crashed_probe,
                                             should_stop=should_stop)))
        if stop():  # the probes may have ended early: nothing of this block is complete
            return
        tasks: list = []
        states: dict[str, _Video] = {}
        for p in part:
            probe = probes.get(p)
            if probe is None:
                tasks.append(p)
            elif probe.info is None:
                tasks.append(probe.decoded)
            else:
                tasks.extend(chunk_tasks(p, probe.info, fps))
                states[p] = _Video(probe.decoded, Segmenter(probe.info.duration,
                                                            vector=segment_vector))
        # A chunk carries up to CHUNK_SLOTS frames: fewer tasks in flight than for images
        # keeps the decoded frames waiting for the encoder to about window * 4 (~40 MB at 224 px).
        chunk_window = max(4, window // 8) if states else window
        for res in window_map(pool, run_task, tasks, chunk_window, preprocess, max_pixels,
                              ocr, on_crash=crashed_task, should_stop=should_stop):
            if not isinstance(res, ChunkResult):
                yield res
                continue
            video = states[res.task.path]
            if res.error is not None and video.error is None:
                video.error = res.error
            if video.error is None and res.pixels is not None:
                for t, px, sig in zip(res.times, res.pixels, res.signatures):
                    yield _Frame(px, video, t, sig)
            if res.task.last:
                yield _VideoEnd(video)


def embed_media(pool: WorkerPool | None, encoder, paths: Sequence[str], *, batch_size: int,
                max_pixels: int, window: int, fps: float, max_seconds: float,
                block: int = BLOCK_FILES, segment_vector: str = SEGMENT_VECTOR,
                should_stop: StopCheck | None = None, timing: EncoderTime | None = None,
                ocr: bool = False) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Decode ``paths`` (images and videos) in ``pool`` and encode them here: ``(decoded,
    vector or None)`` in the order of ``paths``; a video's pair carries its moments in
    ``decoded.segments`` and its overall vector. ``segment_vector``: "mean" or
    "representative" (see :mod:`.segmenting`). Once ``should_stop()`` is true the stream
    ends; a video whose moments are not all encoded yet is dropped with the rest.
    ``timing`` accumulates the time spent waiting for decoders and encoding."""
    units = _units(pool, encoder.preprocess, paths, window=window, max_pixels=max_pixels,
                   fps=fps, max_seconds=max_seconds, block=max(1, block),
                   segment_vector=segment_vector, should_stop=should_stop, ocr=ocr)
    for unit, vec in batch_encode(encoder, units, batch_size, should_stop, timing=timing):
        if isinstance(unit, _Frame):
            if unit.video.error is None:
                unit.video.segmenter.add(unit.t, unit.sig, vec)
        elif isinstance(unit, _VideoEnd):
            yield _finish(unit.video)
        else:
            yield unit, vec


def _finish(video: _Video) -> tuple[Decoded, np.ndarray | None]:
    dec = video.decoded
    overall, segments = video.segmenter.finish()
    if video.error is not None:
        dec.skip_reason = video.error
        return dec, None
    if overall is None:
        dec.skip_reason = "zero length: no frame could be decoded"
        return dec, None
    dec.segments = segments
    return dec, overall
