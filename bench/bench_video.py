"""Video indexing: throughput against the bare model, decode cost, and the moment choices.

Part 1, throughput (``--part throughput``), on generated 1080p H.264 videos (30 fps,
a keyframe every second as phone cameras write them, scenes of the bundled model's
pictures drifting across the frame). Measured in one run, on the same sampled frames:

* decode seconds per video minute, one process, for both decode modes
  (``keyframes``: only keyframes decoded; ``sequential``: every frame, no deblocking);
* the bare model's forward (``encode_pixels`` on the already-sampled, preprocessed
  frames) in frames per second;
* end to end: ``IndexJob.run`` on the folder (probe, hash, decode in decoder processes,
  encode, moments, SQL, FAISS, save) in sampled frames per second, and the ratio;
* the share of the end-to-end wall time that decoding costs (decode process-seconds
  from the one-process measurement / end-to-end wall seconds).

Part 2, moments (``--part moments``), on small generated videos whose scene changes
(and what each scene shows) are known: the cut detector's precision and recall (a
detected cut within one sample interval of a true one), and text -> moment retrieval
(each scene's caption must find its moment among all moments of all videos) with the
moment's vector as the mean of its frames vs its representative frame's.

    python bench/bench_video.py --part throughput --videos 3 --seconds 20 --model ViT-B-32
    python bench/bench_video.py --part moments --videos 12 --scenes 8
    PYTHONPATH=DIR_WITH_SCENEDETECT python bench/bench_video.py --part scenedetect --videos 12

``--part scenedetect`` runs PySceneDetect's ContentDetector on the same videos (it is not a
dependency: install ``scenedetect`` and ``opencv-python-headless`` somewhere to compare).
"""
from __future__ import annotations

import argparse
import fractions
import logging
import os
import random
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the clipsearch command does

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from indexer.training import data  # noqa: E402
from search.config import Settings  # noqa: E402
from search.encoder import OpenClipEncoder  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.ingest.video_decode import chunk_tasks, decode_chunk, probe_file  # noqa: E402
from search.ingest.video_embed import embed_media  # noqa: E402
from search.library import Library  # noqa: E402


# -- generated videos ------------------------------------------------------------------
def scene_pictures(n: int, seed: int, size: int) -> list[tuple[Image.Image, str]]:
    pairs = data.pairs(data.load_glyphs(), n, seed=seed, split="heldout", size=size)
    return [(p.image, p.caption) for p in pairs]


def write_video(path: str, scenes: list[tuple[float, Image.Image]], *, size: tuple[int, int],
                fps: int, gop: int, preset: str = "ultrafast", noise: int = 0,
                seed: int = 0, step: int = 1) -> None:
    """H.264 video of ``scenes`` (seconds, picture): each picture slowly drifts and zooms
    (so frames of one scene differ, as in real footage), a new pose every ``step`` frames."""
    w, h = size
    rng = np.random.default_rng(seed)
    out = av.open(path, "w")
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.codec_context.gop_size = gop
    s.options = {"preset": preset, "sc_threshold": "0"}  # keyframes exactly every gop frames
    i = 0
    for seconds, img in scenes:
        n = int(round(seconds * fps))
        side = int(min(w, h) * 0.9)
        arr = None
        for k in range(n):
            if k % step == 0 or arr is None:  # a new pose every ``step`` frames
                zoom = 1.0 + 0.08 * k / max(1, n)
                pic = img.resize((int(side * zoom),) * 2, Image.BILINEAR)
                canvas = Image.new("RGB", (w, h), (245, 245, 245))
                dx = int((w - pic.width) / 2 + 0.05 * w * (k / max(1, n) - 0.5))
                canvas.paste(pic, (dx, (h - pic.height) // 2))
                arr = np.asarray(canvas)
            out_arr = arr
            if noise:
                out_arr = np.clip(arr.astype(np.int16) + rng.integers(
                    -noise, noise + 1, arr.shape, dtype=np.int16), 0, 255)
            frame = av.VideoFrame.from_ndarray(out_arr.astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            for p in s.encode(frame):
                out.mux(p)
            i += 1
    for p in s.encode():
        out.mux(p)
    out.close()


# -- part 1 -----------------------------------------------------------------------------
def decode_all(paths: list[str], enc, mode: str | None) -> tuple[float, float, list]:
    """(seconds, video seconds, results) decoding every chunk of ``paths`` in this process."""
    results, video_s = [], 0.0
    t0 = time.perf_counter()
    for p in paths:
        probe = probe_file(p, 10**10, 1e9)
        info = probe.info
        video_s += info.duration
        if mode is not None:
            info = _with_mode(info, mode)
        for task in chunk_tasks(p, info, 1.0):
            results.append(decode_chunk(task, enc.preprocess))
    return time.perf_counter() - t0, video_s, results


def _with_mode(info, mode: str):
    import dataclasses
    # keyframes mode is chosen from the index; a huge interval forces sequential decoding
    return dataclasses.replace(info, keyframe_interval=0.5 if mode == "keyframes" else 1e9)


def part_throughput(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    folder = os.path.join(tempfile.gettempdir(), f"bench-video-{args.videos}x{args.seconds}")
    paths = [os.path.join(folder, f"clip{v:02d}.mp4") for v in range(args.videos)]
    if not all(os.path.exists(p) for p in paths):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        t0 = time.perf_counter()
        for v, p in enumerate(paths):
            pics = scene_pictures(max(1, args.seconds // 5), seed=100 + v, size=512)
            write_video(p, [(5.0, img) for img, _ in pics], size=(1920, 1080), fps=30,
                        gop=30, seed=v, step=3)
        print(f"generated {len(paths)} x {args.seconds} s of 1080p30 H.264 in {folder} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    enc = OpenClipEncoder.load(args.model, "none" if args.model != "clipsearch-mini" else None,
                               device="cpu")
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    mb = sum(os.path.getsize(p) for p in paths) / 2**20
    print(f"model {enc.identity.name} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"workers={workers} cores={os.cpu_count()} videos={len(paths)} ({mb:.0f} MiB)")
    decode = {}
    for mode in ("keyframes", "sequential"):
        dt, video_s, results = decode_all(paths, enc, mode)
        n = sum(len(r.times) for r in results)
        decode[mode] = (dt, video_s, n)
        print(f"decode ({mode}), one process: {dt:.2f} s for {video_s:.0f} s of video, {n} "
              f"samples: {60 * dt / video_s:.2f} s per video minute, "
              f"{1e3 * dt / n:.1f} ms per sample", flush=True)
    _, _, results = decode_all(paths, enc, None)  # the mode the indexer picks
    pixels = np.concatenate([r.pixels for r in results if r.pixels is not None])
    ratios = []
    for r in range(args.rounds):
        enc.encode_pixels(pixels[:args.batch_size])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(pixels), args.batch_size):
            enc.encode_pixels(pixels[i:i + args.batch_size])
        bare = len(pixels) / (time.perf_counter() - t0)
        e2e, wall = end_to_end(enc, folder, args, workers, len(pixels))
        ratios.append(e2e / bare)
        auto_mode = "keyframes"  # GOP of one second at 1 sample/s: see decode_mode
        share = decode[auto_mode][0] / wall
        print(f"round {r + 1}: bare forward {bare:.1f} frames/s, end to end {e2e:.1f} "
              f"sampled frames/s, ratio {e2e / bare:.3f}; decoding = {100 * share:.0f}% of "
              f"the end-to-end wall time ({decode[auto_mode][0]:.2f} of {wall:.2f} s)",
              flush=True)
    print(f"RESULT ratio median={float(np.median(ratios)):.3f} samples={len(pixels)}")


def end_to_end(enc, folder: str, args, workers: int, samples: int) -> tuple[float, float]:
    tmp = tempfile.mkdtemp(prefix="bench-video-idx-")
    try:
        settings = Settings.from_env({}, data_dir=tmp, model=args.model,
                                     pretrained="none" if args.model != "clipsearch-mini"
                                     else None, batch_size=args.batch_size, workers=workers)
        library = Library(settings)
        t0 = time.perf_counter()
        summary = IndexJob(library, enc, settings).run([folder])
        dt = time.perf_counter() - t0
        assert summary.added == args.videos, summary.to_dict()
        library.close()
        return samples / dt, dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- part 2 -----------------------------------------------------------------------------
def moment_videos(videos: int, scenes: int) -> tuple[list[str], list[list]]:
    """Small H.264 videos of known scenes (made once, then reused): paths and, per video,
    ``[(t_start, t_end, caption)]`` of its scenes."""
    folder = os.path.join(tempfile.gettempdir(), f"bench-moments-{videos}x{scenes}")
    rng = random.Random(5)
    truth = []  # per video: [(t_start, t_end, caption)]
    paths = []
    pics = scene_pictures(videos * scenes, seed=2024, size=240)
    fresh = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    for v in range(videos):
        clip, t, rows = [], 0.0, []
        for k in range(scenes):
            img, caption = pics[v * scenes + k]
            seconds = rng.choice((2.5, 3.0, 4.0, 5.0, 7.0, 9.0))
            clip.append((seconds, img))
            rows.append((t, t + seconds, caption))
            t += seconds
        path = os.path.join(folder, f"v{v:02d}.mp4")
        if fresh:
            write_video(path, clip, size=(320, 240), fps=12, gop=12, preset="veryfast",
                        noise=4, seed=v)
        paths.append(path)
        truth.append(rows)
    return paths, truth


def cut_score(found: list[list[float]], truth: list[list]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): a found cut within 1 s of a true
    one counts once."""
    tp = fp = fn = 0
    for cuts_found, rows in zip(found, truth):
        matched = set()
        for c in [r[0] for r in rows[1:]]:
            hit = next((f for f in cuts_found if abs(f - c) <= 1.0 and f not in matched), None)
            if hit is None:
                fn += 1
            else:
                matched.add(hit)
                tp += 1
        fp += len(cuts_found) - len(matched)
    return tp, fp, fn


def part_scenedetect(args) -> None:
    """PySceneDetect's ContentDetector (every frame, default threshold) on the same videos."""
    from scenedetect import ContentDetector, detect

    paths, truth = moment_videos(args.videos, args.scenes)
    t0 = time.perf_counter()
    found = []
    for p in paths:
        scenes = detect(p, ContentDetector())
        found.append([start.get_seconds() for start, _ in scenes[1:]])
    dt = time.perf_counter() - t0
    video_s = sum(rows[-1][1] for rows in truth)
    tp, fp, fn = cut_score(found, truth)
    print(f"PySceneDetect ContentDetector: {tp} of {tp + fn} cuts within 1 s (recall "
          f"{tp / (tp + fn):.3f}), {fp} extra (precision {tp / max(1, tp + fp):.3f}); "
          f"{60 * dt / video_s:.2f} s per video minute (its own decode of every frame)")


def part_moments(args) -> None:
    from search.ingest.segmenting import CUT_THRESHOLD
    from search.ingest.workers import WorkerPool

    paths, truth = moment_videos(args.videos, args.scenes)
    enc = OpenClipEncoder.load("clipsearch-mini", None, device="cpu")
    pool = WorkerPool(max(1, (os.cpu_count() or 2) - 1))
    try:
        runs = {}
        for vector in ("mean", "representative"):
            runs[vector] = [(dec, vec) for dec, vec in embed_media(
                pool, enc, paths, batch_size=64, max_pixels=10**9, window=8, fps=1.0,
                max_seconds=1e9, segment_vector=vector)]
    finally:
        pool.shutdown()
    # cut detection (the same for both runs)
    tp, fp, fn = cut_score([[seg.t_start for seg in dec.segments[1:]]
                            for dec, _ in runs["mean"]], truth)
    print(f"cut detection (signature difference > {CUT_THRESHOLD}): {tp} of {tp + fn} cuts "
          f"found within 1 s (recall {tp / (tp + fn):.3f}), {fp} extra cuts "
          f"(precision {tp / max(1, tp + fp):.3f})")
    captions = [r[2] for rows in truth for r in rows]
    qs = enc.encode_texts(captions)
    for vector, pairs in runs.items():
        seg_vecs, owner = [], []
        for v, (dec, _) in enumerate(pairs):
            for s in dec.segments:
                seg_vecs.append(s.vector)
                owner.append((v, s.t_start, s.t_end))
        mat = np.stack(seg_vecs)
        ranks = []
        qi = 0
        for v, rows in enumerate(truth):
            for t0, t1, _ in rows:
                mid = (t0 + t1) / 2
                good = {j for j, (ov, s0, s1) in enumerate(owner) if ov == v and s0 <= mid < s1}
                order = np.argsort(-(mat @ qs[qi]))
                ranks.append(next(r for r, j in enumerate(order) if j in good) + 1)
                qi += 1
        ranks = np.asarray(ranks)
        print(f"text -> moment, {vector} vector: {len(ranks)} queries over {len(mat)} moments: "
              f"R@1 {np.mean(ranks <= 1):.3f}  R@5 {np.mean(ranks <= 5):.3f}  "
              f"R@10 {np.mean(ranks <= 10):.3f}  MRR {np.mean(1 / ranks):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--part", choices=("throughput", "moments", "scenedetect"), required=True)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.part == "throughput":
        part_throughput(args)
    elif args.part == "scenedetect":
        part_scenedetect(args)
    else:
        part_moments(args)


if __name__ == "__main__":
    main()
