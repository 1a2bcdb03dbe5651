"""How many decoder processes a job gets: measured, not a fixed ``cores - 1``.

Before embedding, the job decodes a few of its files in one decoder process (a file
that crashes its decoder must not take the job down) and encodes them here once,
measuring the CPU time of each (``time.process_time``; in this process it counts every
thread, the encoder's included). With ``d`` CPU-seconds to decode one file and
``f`` to encode it, the decoders get at least their proportional share of the cores:
``workers = ceil(cores * d / (d + f))``, between 1 and the number of cores (rounding
*down* left big clip-art PNGs with one decoder while the encoder waited 61-64 % of the
time; two gave 1.35x the bare forward instead of 0.50x: docs/benchmarks.md). Cheap
decodes (640x480 PNGs next to ViT-B-32) get one process; 12-megapixel JPEGs or big
transparent PNGs next to a fast int8 forward get more. The probe costs a handful of
decodes and one small batch.
"""
from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .decode import decode_file
from .embed import crashed_decode
from .workers import WorkerPool, window_map

log = logging.getLogger(__name__)

PROBE_FILES = 6
PROBE_BATCH = 8
#: jobs with fewer files to embed than this skip the probe (it would cost more than it saves)
MIN_FILES_TO_PROBE = 64


@dataclass
class Balance:
    decode_cpu_s: float  # per file
    encode_cpu_s: float  # per image
    workers: int


def choose_workers(encoder, paths: Sequence[str], *, max_pixels: int,
                   cores: int | None = None) -> Balance:
    """Decode a spread sample of ``paths`` and encode it: the worker count for this job."""
    cores = cores or os.cpu_count() or 1
    if len(paths) < MIN_FILES_TO_PROBE:
        return Balance(0.0, 0.0, max(1, cores - 1))
    step = max(1, len(paths) // PROBE_FILES)
    sample = list(paths[::step][:PROBE_FILES])
    pool = WorkerPool(1)
    try:
        decoded = list(window_map(pool, decode_file, sample, len(sample), encoder.preprocess,
                                  max_pixels, on_crash=crashed_decode))
    finally:
        pool.shutdown()
    costs = [x.decode_cpu_s for x in decoded if x.decode_cpu_s is not None]
    pixels = [x.pixels for x in decoded if x.pixels is not None]
    if not costs or not pixels:
        return Balance(0.0, 0.0, max(1, cores - 1))
    d = statistics.median(costs)
    batch = np.stack((pixels * PROBE_BATCH)[:PROBE_BATCH])
    encoder.encode_pixels(batch[:1])  # first-call setup is not the steady cost
    t0 = time.process_time()
    encoder.encode_pixels(batch)
    f = (time.process_time() - t0) / len(batch)
    workers = min(cores, max(1, math.ceil(cores * d / max(d + f, 1e-9) - 0.05)))
    log.info("decoding costs %.1f ms and encoding %.1f ms of CPU per file: %d decoder "
             "process(es)", d * 1000, f * 1000, workers)
    return Balance(d, f, workers)
