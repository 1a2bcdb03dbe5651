"""HTTP search benchmark: the real app under gunicorn on 127.0.0.1, concurrent clients.

1. N random unit vectors (the model's dimension) go straight into a fresh store and
   index through Store/Library (no image encoding): rows with metadata, the auto
   index kind (or --index-type).
2. ``clipsearch serve`` starts on a free port with that data directory.
3. C client threads (http.client, keep-alive) send requests for a fixed time:
   * ``text``: GET /api/search?q=... (the model encodes the text: the real path);
   * ``text-vector``: the same with ``mode=vector`` (no keyword search, no fusion: the
     text path before hybrid search became the default);
   * ``vector``: POST /api/search with a raw query vector (no encode: the server's
     own overhead in isolation).
4. Per request the client latency is split with the timings the server returns
   (``timings_ms``: encode, search, fetch; ``Server-Timing: app`` = time inside Flask):
   overhead = client latency - encode; rest = client latency - encode - search - fetch.

Run by hand (about 3 minutes on 2 cores, most of it building the store):

    python bench/bench_http.py --vectors 100000 --clients 8 --duration 30 --json http.json

The client runs on the same machine as the server and takes CPU from it; numbers are
for this machine only, ratios between modes are the point.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search.config import Settings  # noqa: E402

WORDS = ("red blue green yellow dark bright small large old new city beach forest mountain "
         "river street night morning dog cat bird car boat house tree flower people child "
         "food table window door sky snow rain sun cloud road bridge train book phone").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(settings: Settings, n: int, seed: int) -> dict:
    """Fill a fresh data directory with n items and their random unit vectors."""
    from sqlalchemy import insert

    from search.encoder import load_encoder
    from search.library import Library
    from search.store import STATUS_INDEXED, MediaItem, pack
    from search.vectors import random_unit_vectors

    t0 = time.perf_counter()
    identity = load_encoder(settings).identity  # the identity the server's encoder will have
    vecs = random_unit_vectors(n, identity.dim, seed=seed)
    library = Library(settings)
    library.bind_model(identity)
    rng = np.random.default_rng(seed)
    base = dt.datetime(2015, 1, 1)
    chunk = 5000
    with library.store.session() as s:
        for start in range(0, n, chunk):
            rows = []
            for i in range(start, min(n, start + chunk)):
                rows.append(dict(
                    root="/bench", path=f"/bench/album{i % 100:03d}/img{i:07d}.jpg",
                    size=100_000 + i, mtime=1.6e9 + i, content_hash=f"{i:064x}",
                    width=int(rng.integers(640, 4000)), height=int(rng.integers(480, 3000)),
                    format="JPEG", captured_at=base + dt.timedelta(minutes=int(i) * 37),
                    camera="BenchCam", status=STATUS_INDEXED, skip_reason=None,
                    vector=pack(vecs[i]), indexed_at=base))
            s.execute(insert(MediaItem), rows)
    t1 = time.perf_counter()
    library.load()  # builds the index from the stored vectors and saves it
    kind = library.indexes["images"].kind
    library.close()
    return {"dim": identity.dim, "model": identity.to_dict(), "index_kind": kind,
            "store_seconds": round(t1 - t0, 1), "index_seconds": round(time.perf_counter() - t1, 1)}


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[tuple[float, dict, float | None]] = []  # latency ms, timings, app ms
        self.errors: dict[int, int] = {}


def parse_server_timing(header: str | None) -> dict[str, float]:
    out = {}
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def client_loop(port: int, mode: str, dim: int, stop_at: float, rec: Recorder, seed: int,
                k: int) -> None:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.perf_counter() < stop_at:
        if mode in ("text", "text-vector"):
            q = "+".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            extra = "&mode=vector" if mode == "text-vector" else ""
            method, url, body, headers = "GET", f"/api/search?q={q}&k={k}{extra}", None, {}
        else:
            v = nrng.standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            body = json.dumps({"terms": [{"vector": [round(float(x), 6) for x in v]}], "k": k})
            method, url, headers = "POST", "/api/search", {"Content-Type": "application/json"}
        t0 = time.perf_counter()
        try:
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with rec.lock:
                rec.errors[-1] = rec.errors.get(-1, 0) + 1
            continue
        ms = (time.perf_counter() - t0) * 1e3
        if resp.status != 200:
            with rec.lock:
                rec.errors[resp.status] = rec.errors.get(resp.status, 0) + 1
            continue
        timings = json.loads(data)["timings_ms"]
        app = parse_server_timing(resp.getheader("Server-Timing")).get("app")
        with rec.lock:
            rec.rows.append((ms, timings, app))
    conn.close()


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def run_mode(port: int, mode: str, dim: int, clients: int, duration: float, k: int) -> dict:
    # Warm-up: first requests load lazily initialised pieces (tokenizer, FAISS caches).
    warm = Recorder()
    client_loop(port, mode, dim, time.perf_counter() + 3.0, warm, 999, k)
    rec = Recorder()
    stop_at = time.perf_counter() + duration
    threads = [threading.Thread(target=client_loop, args=(port, mode, dim, stop_at, rec, i, k))
               for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = [r[0] for r in rec.rows]
    enc = [r[1].get("encode", 0.0) for r in rec.rows]
    srch = [r[1].get("search", 0.0) for r in rec.rows]
    fetch = [r[1].get("fetch", 0.0) for r in rec.rows]
    app = [r[2] for r in rec.rows if r[2] is not None]
    overhead = [lt - e for lt, e in zip(lat, enc)]
    rest = [lt - e - s - f for lt, e, s, f in zip(lat, enc, srch, fetch)]
    in_app_rest = [r[2] - sum(r[1].get(x, 0.0) for x in ("encode", "search", "fetch"))
                   for r in rec.rows if r[2] is not None]
    outside_app = [r[0] - r[2] for r in rec.rows if r[2] is not None]

    def stats(xs):
        return {"p50": round(pct(xs, 50), 2), "p99": round(pct(xs, 99), 2),
                "mean": round(float(np.mean(xs)) if xs else float("nan"), 2)}
    return {"mode": mode, "requests": len(lat), "errors": rec.errors,
            "seconds": round(elapsed, 1), "rps": round(len(lat) / elapsed, 1),
            "latency_ms": stats(lat), "encode_ms": stats(enc), "search_ms": stats(srch),
            "fetch_ms": stats(fetch), "app_ms": stats(app),
            "overhead_ms": stats(overhead), "rest_ms": stats(rest),
            "rest_in_app_ms": stats(in_app_rest), "outside_app_ms": stats(outside_app)}


def start_server(settings: Settings, port: int, workers: int, threads: int,
                 env_extra: dict) -> subprocess.Popen:
    env = {**os.environ, "CLIPSEARCH_DATA_DIR": settings.data_dir,
           "CLIPSEARCH_MODEL": settings.model, "CLIPSEARCH_PRETRAINED": settings.pretrained or "",
           "CLIPSEARCH_DEVICE": settings.device or "", "CLIPSEARCH_RATE_LIMIT": "0",
           "CLIPSEARCH_INDEX_TYPE": settings.index_type, **env_extra}
    cmd = [sys.executable, "-m", "clipsearch", "-q", "serve", "--port", str(port), "--workers",
           str(workers), "--threads", str(threads), "--no-access-log"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited: " + proc.stderr.read().decode(errors="replace"))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy")


def describe_machine() -> str:
    import torch
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__}, load average at the end {load}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none",
                    help="weights; 'none' = random weights (same cost as trained ones)")
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per mode")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--precision", default="auto",
                    help="CLIPSEARCH_PRECISION of the server (converted once before it starts)")
    ap.add_argument("--modes", default="text,vector")
    ap.add_argument("--data-dir", help="reuse/keep this data directory (default: temporary)")
    ap.add_argument("--rebuild-index", action="store_true",
                    help="with a reused --data-dir: drop the index files so that the server "
                         "rebuilds them with --index-type")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of the server, e.g. OMP_NUM_THREADS=1")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="clipsearch-bench-http-")
        data_dir = tmp.name
    settings = Settings.from_env({}, data_dir=data_dir, model=args.model,
                                 pretrained=args.pretrained, device="cpu",
                                 index_type=args.index_type, precision=args.precision)
    fresh = not os.path.exists(os.path.join(settings.data_dir, "clipsearch.db"))
    build = build_store(settings, args.vectors, seed=0) if fresh else {"reused": True}
    if fresh:
        print(f"store: {args.vectors} vectors of dim {build['dim']} in {build['store_seconds']} s,"
              f" index {build['index_kind']} in {build['index_seconds']} s", flush=True)
    if not fresh and args.rebuild_index:
        from search.library import Library

        for name in os.listdir(settings.index_dir):
            os.remove(os.path.join(settings.index_dir, name))
        t0 = time.perf_counter()
        library = Library(settings).load()  # rebuilds with --index-type and saves
        build["index_kind"] = library.indexes["images"].kind
        build["index_seconds"] = round(time.perf_counter() - t0, 1)
        library.close()
        print(f"index {build['index_kind']} rebuilt in {build['index_seconds']} s", flush=True)
    env_extra = dict(kv.split("=", 1) for kv in args.server_env)
    env_extra.setdefault("CLIPSEARCH_PRECISION", args.precision)
    if not fresh:  # a converted model lands in DATA_DIR/cache before the server needs it
        from search.encoder import load_encoder
        print(f"encoder: {load_encoder(settings).identity}", flush=True)
    if args.torch_threads:
        env_extra["CLIPSEARCH_TORCH_THREADS"] = str(args.torch_threads)
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(settings, port, args.workers, args.threads, env_extra)
    print(f"server ready in {time.perf_counter() - t0:.1f} s", flush=True)
    results = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/health")
        health = json.loads(conn.getresponse().read())
        dim = health["model"]["dim"]
        for mode in args.modes.split(","):
            r = run_mode(port, mode, dim, args.clients, args.duration, args.k)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            tmp.cleanup()
    out = {"machine": describe_machine(), "args": vars(args), "build": build,
           "health": health, "results": results}
    print()
    print(f"{'mode':8} {'req/s':>7} {'lat p50':>8} {'lat p99':>8} {'enc p50':>8} {'enc p99':>8} "
          f"{'srch p50':>8} {'srch p99':>8} {'ftch p50':>8} {'ftch p99':>8} "
          f"{'rest p50':>8} {'rest p99':>8} {'ovh p50':>8} {'ovh p99':>8}")
    for r in results:
        print(f"{r['mode']:8} {r['rps']:7.1f} {r['latency_ms']['p50']:8.2f} "
              f"{r['latency_ms']['p99']:8.2f} {r['encode_ms']['p50']:8.2f} "
              f"{r['encode_ms']['p99']:8.2f} {r['search_ms']['p50']:8.2f} "
              f"{r['search_ms']['p99']:8.2f} {r['fetch_ms']['p50']:8.2f} "
              f"{r['fetch_ms']['p99']:8.2f} {r['rest_ms']['p50']:8.2f} {r['rest_ms']['p99']:8.2f} "
              f"{r['overhead_ms']['p50']:8.2f} {r['overhead_ms']['p99']:8.2f}")
    print(out["machine"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
