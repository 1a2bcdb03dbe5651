"""Indexing efficiency: end-to-end indexing throughput / bare fp32 eager forward throughput.

Both measured in one run, alternating, on the same images, with the same model
(ViT-B-32 architecture, random weights: no download needed) and batch size. End to
end means files on disk -> decoded, preprocessed, encoded, written to the SQL store
and added to the FAISS index, saved (the whole ``IndexJob.run`` after the model is
loaded) **with the default settings**: ``CLIPSEARCH_PRECISION=auto`` (the mode the
fidelity table allows for the model), decoder workers chosen by the job. The bare
number is eager PyTorch fp32 ``encode_image`` on already-preprocessed pixels.

Image sets (``--sets``), generated once into ``--folder``:

* ``png640``: photo-like 640x480 PNGs (~560 KiB each);
* ``jpeg12mp``: photo-like 4032x3024 JPEGs, quality 90, every other one with an EXIF
  orientation (6, 3 or 8), ~2.5 MiB each;
* ``clipart``: large transparent PNGs (2000-4000 px a side, RGBA clip art: flat shapes,
  gradients and soft edges on a transparent background).

Also printed per set: decode + preprocess CPU cost per image in one process, the peak
resident memory (VmHWM) of every process of the end-to-end run (the main one and each
decoder), the decoder count the job chose and the share of time the encoder waited.

``--modes auto,int8`` adds end-to-end runs with an explicit precision next to the
default one (``auto``), each with its own ratio against the same bare forward.

    python bench/bench_indexing.py --sets png640,jpeg12mp,clipart --images 128 --rounds 2 \
        --modes auto,int8
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

# As the clipsearch command does (clipsearch/main.py main): idle torch threads sleep. The
# setting is process-wide, so the bare forward and the end-to-end run share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from search.config import Settings  # noqa: E402
from search.encoder import build_encoder  # noqa: E402
from search.ingest.decode import decode_file  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.library import Library  # noqa: E402

EXT = {"png640": ".png", "jpeg12mp": ".jpg", "clipart": ".png"}


def _photo(rng, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([
        (np.sin(xx / rng.uniform(20, 90) * (w / 640)) + 1) * rng.uniform(40, 120),
        (np.cos(yy / rng.uniform(20, 90) * (h / 480)) + 1) * rng.uniform(40, 120),
        (xx / w + yy / h) * rng.uniform(50, 125)], axis=-1)
    base += rng.normal(0, 6, base.shape).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def make_photos(folder: str, n: int, seed: int = 0) -> None:
    """Photo-like PNGs (smooth gradients + noise + shapes), 640x480, ~300-600 KB each."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        base = np.stack([
            (np.sin(xx / rng.uniform(20, 90) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
            (np.cos(yy / rng.uniform(20, 90) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
            (xx + yy) / (1120 / rng.uniform(50, 250)),
        ], axis=-1)
        base += rng.normal(0, 6, base.shape)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"photo{i:05d}.png"), compress_level=6)


def make_jpegs(folder: str, n: int, seed: int = 1) -> None:
    """4032x3024 photo-like JPEGs, quality 90; every other one carries an EXIF orientation."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    base = _photo(rng, 4032, 3024)
    for i in range(n):
        # a cheap variation per file: shifted, tinted, with a few shapes
        img = np.roll(base, int(rng.integers(0, 4032)), axis=1)
        img = np.clip(img.astype(np.int16) + rng.integers(-40, 40, 3), 0, 255).astype(np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, 3800)), int(rng.integers(0, 2800))
            img[y:y + 200, x:x + 200] = rng.integers(0, 256, 3)
        exif = Image.Exif()
        if i % 2:
            exif[0x0112] = (6, 3, 8)[(i // 2) % 3]
        exif[0x010F], exif[0x0110] = "BenchCam", "BenchCam 12"
        Image.fromarray(img).save(os.path.join(folder, f"photo{i:05d}.jpg"), quality=90,
                                  exif=exif)


def make_clipart(folder: str, n: int, seed: int = 2) -> None:
    """Large transparent PNGs: RGBA clip art 2000-4000 px a side (shapes, a gradient band,
    half-transparent overlaps, on a transparent background)."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        w, h = int(rng.integers(2000, 4001)), int(rng.integers(2000, 4001))
        img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(img, "RGBA")
        for _ in range(int(rng.integers(3, 8))):
            x0, y0 = rng.uniform(0, 0.7) * w, rng.uniform(0, 0.7) * h
            x1, y1 = x0 + rng.uniform(0.15, 0.5) * w, y0 + rng.uniform(0.15, 0.5) * h
            fill = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
            outline = (0, 0, 0, 255)
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=12)
            else:
                draw.rounded_rectangle((x0, y0, x1, y1), radius=60, fill=fill, outline=outline,
                                       width=12)
        band = Image.linear_gradient("L").resize((w, h // 6)).convert("RGBA")
        band.putalpha(200)
        img.alpha_composite(band, (0, int(rng.integers(0, h - h // 6))))
        img.save(os.path.join(folder, f"clip{i:05d}.png"), compress_level=6)


MAKERS = {"png640": make_photos, "jpeg12mp": make_jpegs, "clipart": make_clipart}


def _files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def ensure_set(name: str, root: str, n: int) -> str:
    folder = os.path.join(root, f"{name}-{n}")
    if not os.path.isdir(folder) or len(os.listdir(folder)) != n:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {n} {name} images in {folder} ...", flush=True)
        MAKERS[name](folder, n)
    return folder


def decode_cost(enc, folder: str, limit: int = 24) -> tuple[float, float]:
    """(CPU ms per file for read + sha256 + decode + preprocess, mean megapixels)."""
    files = _files(folder)[:limit]
    t0 = time.process_time()
    mp = []
    for f in files:
        d = decode_file(f, enc.preprocess, 178_956_970)
        assert d.skip_reason is None, d.skip_reason
        mp.append(d.width * d.height / 1e6)
    return (time.process_time() - t0) * 1000 / len(files), float(np.mean(mp))


def preprocessed(enc, folder: str) -> np.ndarray:
    return np.stack([decode_file(f, enc.preprocess, 178_956_970).pixels for f in _files(folder)])


def bare_forward(enc, pix: np.ndarray, batch: int) -> float:
    enc.encode_pixels(pix[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(pix), batch):
        enc.encode_pixels(pix[i:i + batch])
    return len(pix) / (time.perf_counter() - t0)


def _hwm_mb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class PeakMemory:
    """Samples the peak resident memory (VmHWM) of this process's children every 0.2 s."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            for pid in _children(os.getpid()):
                try:  # decoder processes only, after their exec (a forked child's VmHWM
                    with open(f"/proc/{pid}/cmdline", "rb") as f:  # is the parent's)
                        if b"spawn_main" not in f.read():
                            continue
                except OSError:
                    continue
                mb = _hwm_mb(pid)
                if mb is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), mb)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def end_to_end(enc, folder: str, settings_kw: dict) -> tuple[float, object, dict]:
    data = tempfile.mkdtemp(prefix="bench-idx-")
    try:
        settings = Settings.from_env({}, data_dir=data, **settings_kw)
        library = Library(settings)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            summary = IndexJob(library, enc, settings).run([folder])
            dt = time.perf_counter() - t0
        assert summary.added == len(os.listdir(folder)), summary.to_dict()
        library.close()
        return summary.added / dt, summary, mem.peaks
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", default="png640,jpeg12mp,clipart")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--modes", default="auto",
                    help="comma-separated end-to-end precision modes (default: auto only)")
    ap.add_argument("--workers", type=int, default=None, help="decoder processes (default: chosen)")
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "bench-indexing"))
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "clipsearch-ov-cache"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    modes = args.modes.split(",")
    bare_enc = build_encoder(args.model, "none", precision="fp32")
    encs, kws = {}, {}
    for mode in modes:
        kws[mode] = dict(model=args.model, pretrained="none", precision=mode,
                         batch_size=args.batch_size, workers=args.workers, checkpoint_every=256)
        # as `clipsearch index` loads it (converted models cached in --cache-dir)
        encs[mode] = build_encoder(args.model, "none", precision=mode, cache_dir=args.cache_dir)
    print(f"model {bare_enc.identity.name} ({bare_enc.identity.pretrained}); bare: fp32 eager; "
          + ", ".join(f"end to end '{m}' runs {e.identity.precision} ({type(e).__name__})"
                      for m, e in encs.items())
          + f"; batch {args.batch_size}, cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}",
          flush=True)
    for name in args.sets.split(","):
        folder = ensure_set(name, args.folder, args.images)
        size_mb = sum(os.path.getsize(f) for f in _files(folder)) / 2**20
        cost, mp = decode_cost(bare_enc, folder)
        pix = preprocessed(bare_enc, folder)
        print(f"\n[{name}] {args.images} files, {size_mb:.0f} MiB, {mp:.1f} MP on average; "
              f"read+hash+decode+preprocess {cost:.1f} CPU-ms/file in one process", flush=True)
        bare: list[float] = []
        e2e: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds):
            bare.append(bare_forward(bare_enc, pix, args.batch_size))
            print(f"[{name}] round {r + 1}: bare fp32 {bare[-1]:.2f}/s", flush=True)
            for mode in modes:
                rate, summary, peaks = end_to_end(encs[mode], folder, kws[mode])
                e2e[mode].append(rate)
                print(f"[{name}] round {r + 1} {mode} ({encs[mode].identity.precision}): end to "
                      f"end {rate:.2f}/s, ratio {rate / bare[-1]:.3f}; decoders "
                      f"{summary.decoder_workers}, encoder waited "
                      f"{100 * summary.encoder_wait_share:.0f}%; peak RSS decoders "
                      f"{sorted(peaks.values(), reverse=True)} MB, main {_hwm_mb(os.getpid())} "
                      f"MB, load {os.getloadavg()[0]:.1f}", flush=True)
        for mode in modes:
            ratios = [e / b for e, b in zip(e2e[mode], bare)]
            print(f"RESULT {name} {mode}: bare={statistics.median(bare):.2f}/s "
                  f"e2e={statistics.median(e2e[mode]):.2f}/s ratio "
                  f"median={statistics.median(ratios):.3f} min={min(ratios):.3f} "
                  f"max={max(ratios):.3f}", flush=True)

if __name__ == "__main__":
    main()
