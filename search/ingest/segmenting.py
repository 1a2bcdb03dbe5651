"""Sampled frames become moments: runs of similar consecutive frames, cut at scene changes.

A cut falls between two consecutive samples whose 16x16 colour signatures differ by
more than :data:`CUT_THRESHOLD` (mean absolute difference, 0..1), and a moment longer
than :data:`MAX_SEGMENT_SECONDS` is cut anyway, so that a long static shot still
points to the right minute. Each moment keeps its start (its first sample), its end (the
next moment's start, or the video's end), its representative frame (the sample closest
to the moment's mean) and one vector: the normalised mean of its samples, or the
representative sample's own (:data:`SEGMENT_VECTOR`; bench/bench_video.py measures both,
docs/benchmarks.md has the figures). The video's overall vector is the normalised mean
of all its samples.

Online: only the current moment's sample vectors are held, so memory does not grow
with the video's length beyond one small row per finished moment.
"""
from __future__ import annotations

import numpy as np

from ..segments import SegmentData

CUT_THRESHOLD = 0.05
MAX_SEGMENT_SECONDS = 30.0
SEGMENT_VECTOR = "mean"  # "mean" or "representative"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def signature_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 signatures, 0 (same) .. 1."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) / 255.0


class Segmenter:
    """Feed samples in time order with :meth:`add`; :meth:`finish` returns the moments."""

    def __init__(self, duration: float, *, vector: str = SEGMENT_VECTOR,
                 cut: float = CUT_THRESHOLD, max_seconds: float = MAX_SEGMENT_SECONDS):
        if vector not in ("mean", "representative"):
            raise ValueError(f"unknown segment vector {vector!r}")
        self.duration = duration
        self.vector = vector
        self.cut = cut
        self.max_seconds = max_seconds
        self.segments: list[SegmentData] = []
        self.total: np.ndarray | None = None
        self.samples = 0
        self._times: list[float] = []
        self._vecs: list[np.ndarray] = []
        self._prev_sig: np.ndarray | None = None

    def add(self, t: float, sig: np.ndarray, vec: np.ndarray) -> None:
        if self._times:
            cut = self._prev_sig is not None and signature_difference(sig, self._prev_sig) > self.cut
            if cut or t - self._times[0] >= self.max_seconds:
                self._close(t)
        self._prev_sig = sig
        self._times.append(float(t))
        self._vecs.append(vec)
        self.total = vec.astype(np.float64) if self.total is None else self.total + vec
        self.samples += 1

    def _close(self, end: float) -> None:
        vecs = np.stack(self._vecs)
        mean = _unit(vecs.mean(axis=0))
        rep = int(np.argmax(vecs @ mean))
        start = 0.0 if not self.segments else self._times[0]
        vector = mean if self.vector == "mean" else _unit(vecs[rep])
        self.segments.append(SegmentData(start, max(end, start), self._times[rep], vector))
        self._times, self._vecs = [], []

    def finish(self) -> tuple[np.ndarray | None, list[SegmentData]]:
        """``(overall unit vector, moments)``; ``(None, [])`` when no sample came."""
        if self._times:
            self._close(max(self.duration, self._times[-1]))
        if self.total is None:
            return None, []
        return _unit(self.total), self.segments
