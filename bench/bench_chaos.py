"""Chaos benchmark: many processes on one library, kills at any moment, nothing lost.

For ``--duration`` seconds (and until ``--kills`` SIGKILLs have landed, at most
``--max-duration``), all at once on one data directory (SQLite, or ``--db-url``):

* ``clipsearch serve --workers 2`` answers ``--clients`` search clients (text searches, item
  details, thumbnails), keep-alive HTTP on 127.0.0.1;
* a growing library: images (a few with sidecar captions, a few corrupt) keep appearing;
* one ``clipsearch index --wait`` job indexes it and is SIGKILLed a random 0.2..2x
  ``--kill-every`` seconds after it starts scanning, then restarted; its process tree is
  listed before each kill and must be gone 5 s later;
* every ``--second-every`` seconds a second ``clipsearch index`` (no --wait) starts: it must
  be refused (exit 3, the holder named, no traceback) or, if it found the library free,
  finish cleanly;
* over the API, items are deleted and texts added now and then (200/201, or 409 while a CLI
  job holds the library; never 5xx).

Then a final ``clipsearch index --wait`` completes the library, the server is stopped with
SIGTERM, and the end state is checked: ``clipsearch check`` (store ids == index ids), no
duplicate rows or captions, every good file indexed exactly once, every bad file skipped,
every text the API accepted present once, no process left behind.

Run by hand (docs/benchmarks.md has results):

    python bench/bench_chaos.py --duration 300 --kills 50 --json chaos.json
    python bench/bench_chaos.py --duration 300 --db-url postgresql+psycopg://... --wipe

A shortened run (``--duration 40``) is part of the test suite (tests/test_chaos.py). Exit
status 0 when every target is met (0 5xx, 0 orphans, 0 lost or doubled files, 0 tracebacks,
check passes), 1 otherwise.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from search.lifetime import alive, cmdline, descendants, killed_with_starter  # noqa: E402

TINY = os.path.join(REPO, "tests", "tiny-clip.json")
API_KEY = "chaos-key-0123456789abcdef"
WORDS = ("red blue green yellow dark bright small large stripes dots squares circles sky "
         "night beach forest city river").split()
ORPHAN_WINDOW = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stats:
    """Thread-safe counters and latency samples."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count: collections.Counter = collections.Counter()
        self.latency: list[float] = []
        self.notes: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.count[key] += n

    def note(self, text: str) -> None:
        with self.lock:
            if len(self.notes) < 200:
                self.notes.append(text)


class Library:
    """The growing library: good images (some captioned) and bad files."""

    def __init__(self, root: str, seed: int):
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.good: list[str] = []
        self.bad: list[str] = []
        self.captioned: list[str] = []
        self.n = 0

    def add(self, count: int) -> None:
        for _ in range(count):
            i = self.n
            self.n += 1
            folder = os.path.join(self.root, f"album{i % 7}", f"batch{i // 500:03d}")
            os.makedirs(folder, exist_ok=True)
            if i % 53 == 17:  # a corrupt file and a truncated JPEG now and then
                path = os.path.join(folder, f"bad{i:06d}.jpg")
                data = b"not an image at all" if i % 2 else self._jpeg(i)[:300]
                self._write(path, data)
                self.bad.append(path)
                continue
            path = os.path.join(folder, f"img{i:06d}.{'jpg' if i % 3 else 'png'}")
            if i % 10 == 3:  # the caption first: the image is never seen without it
                self._write(os.path.splitext(path)[0] + ".txt",
                            f"caption {i}: {' '.join(self.rng.choice(WORDS, 3))}".encode())
                self.captioned.append(path)
            self._write(path, self._jpeg(i) if i % 3 else self._png(i))
            self.good.append(path)

    def _image(self, i: int) -> Image.Image:
        w, h = int(self.rng.integers(160, 640)), int(self.rng.integers(120, 480))
        cells = self.rng.integers(0, 256, size=(int(self.rng.integers(2, 7)),
                                                int(self.rng.integers(2, 7)), 3), dtype=np.uint8)
        return Image.fromarray(cells).resize((w, h), Image.NEAREST)

    def _jpeg(self, i: int) -> bytes:
        import io
        buf = io.BytesIO()
        self._image(i).save(buf, "JPEG", quality=85)
        return buf.getvalue()

    def _png(self, i: int) -> bytes:
        import io
        buf = io.BytesIO()
        self._image(i).save(buf, "PNG")
        return buf.getvalue()

    @staticmethod
    def _write(path: str, data: bytes) -> None:
        tmp = path + ".part"  # appear whole: a file is never seen half-written
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


class Http:
    """A keep-alive HTTP/1.1 connection that reconnects after an error."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None,
                auth: bool = False) -> tuple[int, bytes]:
        headers = {"Connection": "keep-alive"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {API_KEY}"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Chaos:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir or tempfile.mkdtemp(prefix="clipsearch-chaos-")
        self.root = os.path.join(self.work, "library")
        self.data = os.path.join(self.work, "data")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.library = Library(self.root, args.seed)
        self.stats = Stats()
        self.stop_load = threading.Event()
        self.port = free_port()
        self.env = dict(os.environ, CLIPSEARCH_DATA_DIR=self.data, CLIPSEARCH_MODEL=args.model,
                        CLIPSEARCH_PRETRAINED=args.pretrained, CLIPSEARCH_DEVICE="cpu",
                        CLIPSEARCH_WORKERS=str(args.decoders), CLIPSEARCH_BATCH_SIZE="16",
                        CLIPSEARCH_CHECKPOINT_EVERY=str(args.checkpoint_every),
                        CLIPSEARCH_API_KEYS=API_KEY, CLIPSEARCH_LIBRARY_ROOTS=self.root,
                        CLIPSEARCH_RATE_LIMIT="0", PYTHONPATH=REPO)
        if args.db_url:
            self.env["CLIPSEARCH_DB_URL"] = args.db_url
        self.db_url = args.db_url or "sqlite:///" + os.path.join(self.data, "clipsearch.db")
        self.item_ids: list[int] = []
        self.texts_accepted = 0
        self.orphans: dict[int, str] = {}
        self.kills = 0
        self.runs = 0

    # -- helpers -------------------------------------------------------------------
    def cli(self, *args: str, log: str) -> subprocess.Popen:
        err = open(os.path.join(self.logs, log), "wb")
        return subprocess.Popen([sys.executable, "-m", "clipsearch", *args], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=err, cwd=self.work,
                                preexec_fn=killed_with_starter)

    def log_text(self, log: str) -> str:
        with open(os.path.join(self.logs, log), "rb") as f:
            return f.read().decode(errors="replace")

    def watch_gone(self, pids: list[int], what: str) -> None:
        """Record as orphans those of ``pids`` still alive ORPHAN_WINDOW s from now."""
        deadline = time.monotonic() + ORPHAN_WINDOW
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in alive(pids):
            self.orphans[pid] = f"{what}: {cmdline(pid)[:120]}"
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def wipe_store(self) -> None:
        from sqlalchemy import create_engine, inspect, text
        eng = create_engine(self.args.db_url)
        with eng.begin() as conn:
            tables = inspect(conn).get_table_names()
            if tables and not self.args.wipe:
                raise SystemExit(f"{self.args.db_url} holds tables {tables}; pass --wipe to "
                                 "let the benchmark drop them")
            for t in tables:
                conn.execute(text(f'DROP TABLE IF EXISTS "{t}" CASCADE'))
        eng.dispose()

    # -- the actors ----------------------------------------------------------------
    def grower(self) -> None:
        while not self.stop_load.wait(1.0):
            self.library.add(self.args.growth)

    def searcher(self, seed: int) -> None:
        rng = random.Random(seed)
        http_ = Http(self.port)
        while not self.stop_load.is_set():
            q = "+".join(rng.sample(WORDS, 2))
            t0 = time.perf_counter()
            try:
                status, body = http_.request("GET", f"/api/search?q={q}&k=10")
            except OSError as e:
                self.stats.add("connection errors")
                self.stats.note(f"search: {e}")
                time.sleep(0.5)
                continue
            with self.stats.lock:
                self.stats.latency.append(time.perf_counter() - t0)
            self.count_status("search", status, body)
            if status == 200 and rng.random() < 0.2:
                hits = json.loads(body).get("results") or []
                if hits:
                    item = hits[rng.randrange(len(hits))]["id"]
                    with self.stats.lock:
                        self.item_ids.append(item)
                        del self.item_ids[:-500]
                    for path in (f"/api/items/{item}", f"/api/items/{item}/thumbnail?size=64"):
                        status, body = http_.request("GET", path)
                        self.count_status("item", status, body)

    def count_status(self, what: str, status: int, body: bytes) -> None:
        self.stats.add("requests")
        self.stats.add(f"{what} {status}")
        if status >= 500:
            self.stats.add("5xx")
            self.stats.note(f"{what} {status}: {body[:300]!r}")

    def api_writer(self) -> None:
        rng = random.Random(self.args.seed + 1)
        http_ = Http(self.port)
        while not self.stop_load.wait(rng.uniform(2, 5)):
            if rng.random() < 0.5:
                with self.stats.lock:
                    item = rng.choice(self.item_ids) if self.item_ids else None
                if item is None:
                    continue
                status, body = http_.request("DELETE", f"/api/items/{item}", auth=True)
                self.count_status("delete", status, body)
            else:
                texts = [f"chaos text {rng.random():.12f}" for _ in range(3)]
                status, body = http_.request("POST", "/api/texts",
                                             {"texts": texts, "source": "chaos"}, auth=True)
                self.count_status("texts", status, body)
                if status == 201:
                    with self.stats.lock:
                        self.texts_accepted += json.loads(body)["added"]
            if status == 409 and b"another writer" not in body:
                self.stats.add("409 without the holder")

    def indexer(self) -> None:
        """The job that is killed and restarted."""
        rng = random.Random(self.args.seed + 2)
        # A run that ends by itself before its kill halves the scale of the next delays
        # (down to 50 ms): when indexing catches up with the library, runs are short, and a
        # fixed scale would stop killing anything mid-run.
        scale = self.args.kill_every
        while not self.stop_load.is_set():
            self.runs += 1
            log = f"index-{self.runs:03d}.log"
            proc = self.cli("index", self.root, "--wait", "--progress", log=log)
            started = None
            delay = rng.uniform(0.2, 2.0) * scale
            while proc.poll() is None:
                if started is None and "scanning" in self.log_text(log):
                    started = time.monotonic()
                if started is not None and time.monotonic() - started >= delay:
                    pids = descendants(proc.pid)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    self.kills += 1
                    self.watch_gone(pids, f"killed index job {self.runs}")
                    break
                time.sleep(0.05)
            else:
                self.stats.add(f"index job exit {proc.returncode}")
                scale = max(0.05, scale / 2)
            if "Traceback" in self.log_text(log):
                self.stats.add("tracebacks")
                self.stats.note(f"traceback in {log}")

    def second_writer(self) -> None:
        n = 0
        while not self.stop_load.wait(self.args.second_every):
            n += 1
            log = f"second-{n:03d}.log"
            proc = self.cli("index", self.root, "--no-progress", log=log)
            try:
                rc = proc.wait(600)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            text_ = self.log_text(log)
            if rc == 3:
                named = re.search(r"another writer is working on this library: .*pid \d+ on",
                                  text_)
                self.stats.add("second writer refused" if named else
                               "second writer refused without naming the holder")
                if "loaded model" in text_:
                    self.stats.add("second writer worked before refusing")
            elif rc == 0:
                self.stats.add("second writer served")
            else:
                self.stats.add(f"second writer exit {rc}")
                self.stats.note(f"{log}: exit {rc}: {text_[-500:]}")
            if "Traceback" in text_:
                self.stats.add("tracebacks")
                self.stats.note(f"traceback in {log}")

    # -- the run ----------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        if a.db_url:
            self.wipe_store()
        self.library.add(a.initial)
        server = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "serve", "--workers", "2", "--threads", "4",
             "--port", str(self.port), "--no-access-log"], env=self.env, cwd=self.work,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logs, "serve.log"), "wb"),
            preexec_fn=killed_with_starter)  # a killed benchmark takes its server along
        t_setup = time.monotonic()
        probe = Http(self.port)
        while True:
            try:
                if probe.request("GET", "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - t_setup > 600:
                raise SystemExit("the server did not start: " + self.log_text("serve.log")[-2000:])
            time.sleep(0.5)
        setup_s = time.monotonic() - t_setup
        t0 = time.monotonic()
        self.hard_deadline = t0 + max(a.duration, a.max_duration)
        actors = [threading.Thread(target=self.grower, daemon=True),
                  threading.Thread(target=self.api_writer, daemon=True),
                  threading.Thread(target=self.second_writer, daemon=True),
                  *[threading.Thread(target=self.searcher, args=(i,), daemon=True)
                    for i in range(a.clients)]]
        killer = threading.Thread(target=self.indexer, daemon=True)
        for t in actors + [killer]:
            t.start()
        while time.monotonic() - t0 < a.duration or (
                self.kills < a.kills and time.monotonic() < self.hard_deadline):
            time.sleep(0.5)
        self.stop_load.set()
        load_s = time.monotonic() - t0
        killer.join(600)
        for t in actors:
            t.join(620)
        # the end: one last run completes the library, then everything is checked
        final = self.cli("index", self.root, "--wait", "--no-progress", log="final.log")
        final_rc = final.wait(1200)
        check = subprocess.run([sys.executable, "-m", "clipsearch", "check"], env=self.env,
                               capture_output=True, text=True, timeout=600, cwd=self.work)
        server_pids = descendants(server.pid) + [server.pid]
        server.send_signal(signal.SIGTERM)
        try:
            server_rc = server.wait(90)
        except subprocess.TimeoutExpired:
            server.kill()
            server_rc = server.wait()
        self.watch_gone(server_pids, "server")
        for pid in descendants(os.getpid()):
            self.orphans.setdefault(pid, f"left behind: {cmdline(pid)[:120]}")
        store = self.verify_store()
        lat = np.array(self.stats.latency) * 1000 if self.stats.latency else np.zeros(1)
        c = self.stats.count
        result = {
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "store": "postgresql" if a.db_url else "sqlite",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"load {os.getloadavg()[0]:.1f}",
            "setup_seconds": round(setup_s, 1), "load_seconds": round(load_s, 1),
            "requests": c["requests"], "5xx": c["5xx"],
            "connection_errors": c["connection errors"],
            "search_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "search_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "searches_per_second": round(len(self.stats.latency) / max(load_s, 1e-9), 1),
            "statuses": {k: v for k, v in sorted(c.items()) if k[0].isalpha()
                         and k.split()[0] in ("search", "item", "delete", "texts")},
            "kills": self.kills, "index_runs": self.runs,
            "index_exits": {k: v for k, v in c.items() if k.startswith("index job exit")},
            "second_writer": {k: v for k, v in c.items() if k.startswith("second writer")},
            "tracebacks": c["tracebacks"], "orphans": len(self.orphans),
            "orphan_processes": self.orphans, "final_index_rc": final_rc,
            "check_rc": check.returncode, "check": check.stdout.strip(),
            "server_rc_on_sigterm": server_rc, "files": {
                "good": len(self.library.good), "bad": len(self.library.bad),
                "captioned": len(self.library.captioned)},
            "texts_accepted_by_api": self.texts_accepted, **store,
            "notes": self.stats.notes[:20], "workdir": self.work,
        }
        result["targets_met"] = (
            result["5xx"] == 0 and result["orphans"] == 0 and result["tracebacks"] == 0
            and result["connection_errors"] == 0 and server_rc == 0
            and result["lost_files"] == 0 and result["doubled_files"] == 0
            and result["doubled_captions"] == 0 and result["missing_captions"] == 0
            and result["wrongly_indexed"] == 0 and result["texts_lost"] == 0
            and final_rc == 0 and check.returncode == 0 and c["409 without the holder"] == 0
            and c["second writer worked before refusing"] == 0
            and c["second writer refused without naming the holder"] == 0)
        return result

    def verify_store(self) -> dict:
        from sqlalchemy import create_engine, text
        eng = create_engine(self.db_url)
        with eng.connect() as conn:
            rows = conn.execute(text("SELECT path, status FROM media_items")).all()
            texts = conn.execute(text("SELECT source, text FROM texts")).all()
        eng.dispose()
        paths = collections.Counter(os.path.realpath(p) for p, _ in rows)
        indexed = {os.path.realpath(p) for p, s in rows if s == "indexed"}
        skipped = {os.path.realpath(p) for p, s in rows if s == "skipped"}
        good = {os.path.realpath(p) for p in self.library.good}
        bad = {os.path.realpath(p) for p in self.library.bad}
        sidecars = collections.Counter(os.path.realpath(s[len("sidecar:"):])
                                       for s, _ in texts if s.startswith("sidecar:"))
        captioned = {os.path.realpath(p) for p in self.library.captioned}
        chaos_texts = collections.Counter(t for s, t in texts if s == "chaos")
        return {
            "rows": len(rows),
            "lost_files": len(good - indexed),
            "doubled_files": sum(n - 1 for n in paths.values() if n > 1),
            "wrongly_indexed": len(indexed - good) + len(bad - skipped),
            "doubled_captions": sum(n - 1 for n in sidecars.values() if n > 1),
            "missing_captions": len(captioned - set(sidecars)),
            "texts_lost": max(0, self.texts_accepted - len(chaos_texts)),
            "doubled_texts": sum(n - 1 for n in chaos_texts.values() if n > 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300, help="seconds of load")
    ap.add_argument("--kills", type=int, default=0,
                    help="keep killing past --duration until this many SIGKILLs landed")
    ap.add_argument("--max-duration", type=float, default=1800,
                    help="hard bound on the load phase when --kills is not reached")
    ap.add_argument("--kill-every", type=float, default=10.0)
    ap.add_argument("--second-every", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--initial", type=int, default=1500, help="images at the start")
    ap.add_argument("--growth", type=int, default=4, help="images added per second")
    ap.add_argument("--decoders", type=int, default=1, help="decoder processes per job")
    ap.add_argument("--checkpoint-every", type=int, default=32)
    ap.add_argument("--model", default=TINY)
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--db-url", help="PostgreSQL URL (default: SQLite in the data directory)")
    ap.add_argument("--wipe", action="store_true",
                    help="drop the tables of a non-empty --db-url store first")
    ap.add_argument("--workdir", help="folder for the library, data and logs (default: temp)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", help="write the result here too")
    args = ap.parse_args()
    result = Chaos(args).run()
    text_ = json.dumps(result, indent=2)
    print(text_)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text_ + "\n")
    sys.exit(0 if result["targets_met"] else 1)


if __name__ == "__main__":
    main()
