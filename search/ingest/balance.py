"""How many decoder processes a job gets: measured, not a fixed ``cores - 1``.

Before embedding, the job decodes a few of its files in one decoder process (a file
that crashes its decoder must not take the job down) and encodes them here once,
measuring the CPU time of each (``time.process_time``; in this process it counts every
thread, the encoder's included). With ``d`` CPU-seconds to decode one file and
``f`` to encode it, the decoders get four times their proportional share of the
cores: ``workers = ceil(4 * cores * d / (d + f))``, between 1 and the number of cores.

Why more than the proportional share: the kernel shares the cores evenly between
runnable threads and the encoder runs one thread per core, so while it computes a
decoder gets well under a core, and a whole batch must be decoded while the previous
one encodes; decoders that get ahead block on the bounded queue and cost nothing.
Measured on 2 cores (docs/benchmarks.md, same machine, quiet): two decoders instead of
one gave 12-megapixel JPEGs 1.05x instead of 0.69x the bare forward with fp32-ov and
2.18x instead of 1.43x with int8, and 640x480 PNGs 2.90x instead of 2.28x with int8;
for 640x480 PNGs next to fp32-ov one or two made no difference (1.01x / 0.99x). With
the costs this probe measured there (d / f: PNG 8 / 90 ms fp32-ov and 8 / 27-30 ms
int8, JPEG 35 / 92-100 ms and 34 / 27 ms), 3 is the smallest factor that gives two
decoders in every case where two were faster; 4 leaves a margin for noisy probes.
Rounding the proportional share *down* had left big clip-art PNGs with one decoder
while the encoder waited 61-64 % of the time. The probe costs a handful of decodes and
one small batch.
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


#: decoders get this multiple of their proportional share of the cores (see above)
HEADROOM = 4.0


def workers_for(decode_cpu_s: float, encode_cpu_s: float, cores: int) -> int:
    """Decoder processes for files that cost ``decode_cpu_s`` to decode and ``encode_cpu_s``
    to encode, on ``cores`` cores: between 1 and ``cores``."""
    share = decode_cpu_s / max(decode_cpu_s + encode_cpu_s, 1e-9)
    return min(cores, max(1, math.ceil(HEADROOM * cores * share - 0.05)))


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
    workers = workers_for(d, f, cores)
    log.info("decoding costs %.1f ms and encoding %.1f ms of CPU per file: %d decoder "
             "process(es)", d * 1000, f * 1000, workers)
    return Balance(d, f, workers)
