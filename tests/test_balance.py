"""The decoder count is measured per job; the encoder's waiting share is reported."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from search.config import Settings
from search.ingest.balance import MIN_FILES_TO_PROBE, choose_workers, workers_for
from search.ingest.decode import decode_file
from search.ingest.job import IndexJob
from search.library import Library


def _folder(root, n, size=(64, 48)):
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            root / f"p{i:03d}.png")
    return sorted(str(p) for p in root.iterdir())


def test_decode_reports_its_cpu_time(tmp_path, encoder):
    (path,) = _folder(tmp_path / "one", 1)
    dec = decode_file(path, encoder.preprocess, 10**8)
    assert dec.skip_reason is None and dec.decode_cpu_s is not None and dec.decode_cpu_s >= 0


def test_probe_measures_both_sides_and_stays_within_the_cores(tmp_path, encoder):
    paths = _folder(tmp_path / "many", MIN_FILES_TO_PROBE)
    for cores in (1, 2, 8):
        b = choose_workers(encoder, paths, max_pixels=10**8, cores=cores)
        assert b.decode_cpu_s > 0 and b.encode_cpu_s > 0
        assert 1 <= b.workers <= cores
    few = choose_workers(encoder, paths[:3], max_pixels=10**8, cores=4)
    assert few.workers == 3 and few.decode_cpu_s == 0  # too few files to be worth a probe


def test_the_rule_on_measured_costs():
    # CPU seconds per file the probe measured on the 2-core benchmark box (docs/benchmarks.md)
    assert workers_for(0.008, 0.090, 2) == 1    # 640x480 PNG next to fp32-ov: one is enough
    assert workers_for(0.008, 0.030, 2) == 2    # 640x480 PNG next to int8
    assert workers_for(0.035, 0.100, 2) == 2    # 12-MP JPEG next to fp32-ov
    assert workers_for(0.092, 0.026, 2) == 2    # big clip-art PNG: never more than the cores
    assert workers_for(0.008, 0.090, 16) == 6
    assert workers_for(0.0, 0.1, 4) == 1 and workers_for(0.1, 0.0, 4) == 4


def test_a_file_that_fails_in_the_probe_costs_nothing(tmp_path, encoder):
    paths = _folder(tmp_path / "many", MIN_FILES_TO_PROBE)
    with open(paths[0], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    assert choose_workers(encoder, paths, max_pixels=10**8, cores=2).workers >= 1


def test_job_reports_decoders_and_encoder_wait(tmp_path, encoder):
    _folder(tmp_path / "lib", MIN_FILES_TO_PROBE + 2)
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"),
                                 model=os.path.join(os.path.dirname(__file__), "tiny-clip.json"),
                                 pretrained="none", batch_size=16)
    lib = Library(settings)
    summary = IndexJob(lib, encoder, settings).run([str(tmp_path / "lib")])
    assert summary.added == MIN_FILES_TO_PROBE + 2
    assert 1 <= summary.decoder_workers <= (os.cpu_count() or 1)
    assert 0.0 <= summary.encoder_wait_share <= 1.0
    d = summary.to_dict()
    assert d["decoder_workers"] == summary.decoder_workers and "encoder_wait_share" in d
    lib.close()
