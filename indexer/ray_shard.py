"""The work inside one Ray actor (:class:`ShardEmbedder`) and what it sends back
(:class:`ShardResult`); :mod:`indexer.ray_backend` drives them. Plain Python: importable
and testable without Ray, and the module Ray's workers import the actor class from."""
from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from search.config import Settings
from search.encoder import ModelIdentity, load_encoder
from search.ingest.decode import Decoded, decode_file
from search.ingest.discover import is_video_path
from search.ingest.embed import batch_encode
from search.ingest.video_embed import embed_media


@dataclass
class ShardResult:
    """What one actor returns for one shard (pickled through Ray's object store).

    ``decoded`` has one entry per input path, in input order, pixels dropped;
    ``vectors`` is float32 ``(m, d)``, L2-normalised, one row per entry of
    ``decoded`` without ``skip_reason``, in the same order.
    """

    index: int
    decoded: list[Decoded]
    vectors: np.ndarray
    identity: ModelIdentity
    worker: str  # "host:pid" of the process that finished the shard

    def pairs(self) -> Iterator[tuple[Decoded, np.ndarray | None]]:
        rows = iter(self.vectors)
        for dec in self.decoded:
            yield dec, (next(rows) if dec.skip_reason is None else None)


class ShardEmbedder:
    """The work inside one Ray actor: load the encoder once, then embed shard after shard.

    Plain Python (Ray wraps it with :func:`ray.remote`), so it can also be
    subclassed, e.g. by tests that make a worker die at a chosen file.
    """

    def __init__(self, settings: Settings, *, device: str, threads: int, decode_threads: int):
        self.encoder = load_encoder(settings, device=device, threads=threads)
        self.batch_size = max(1, settings.batch_size)
        self.max_pixels = settings.max_pixels
        self.video_fps = settings.video_fps
        self.video_max_seconds = settings.video_max_seconds
        # Threads overlap decoding with the forward pass; Pillow and hashlib release the GIL.
        self._pool = ThreadPoolExecutor(decode_threads) if decode_threads > 1 else None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def identity(self) -> ModelIdentity:
        return self.encoder.identity

    def where(self) -> str:
        return self.worker

    def _decode(self, path: str) -> Decoded:
        return decode_file(path, self.encoder.preprocess, self.max_pixels)

    def embed(self, index: int, paths: Sequence[str]) -> ShardResult:
        """Decode and encode ``paths``; never raises for a bad file (it is marked skipped).
        A video (a shard of its own, see :meth:`RayEmbedder.__call__`) is decoded here,
        chunk after chunk, and comes back with its moments."""
        if any(is_video_path(p) for p in paths):
            pairs = embed_media(None, self.encoder, paths, batch_size=self.batch_size,
                                max_pixels=self.max_pixels, window=1, fps=self.video_fps,
                                max_seconds=self.video_max_seconds)
        else:
            stream = (self._pool.map(self._decode, paths) if self._pool
                      else map(self._decode, paths))
            pairs = batch_encode(self.encoder, stream, self.batch_size)
        decoded: list[Decoded] = []
        vectors: list[np.ndarray] = []
        for dec, vec in pairs:
            decoded.append(dec)
            if vec is not None:
                vectors.append(vec)
        matrix = np.stack(vectors) if vectors else np.zeros((0, self.encoder.dim), np.float32)
        return ShardResult(index, decoded, matrix.astype(np.float32, copy=False),
                           self.encoder.identity, self.worker)
