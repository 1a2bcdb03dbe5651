"""No process of a killed clipsearch command outlives it by more than a few seconds.

Each test starts the real command as a subprocess, waits until its helper processes run
(decoder processes mid-decode, Ray's local cluster with its actors, gunicorn workers with
a web indexing job's decoders), lists every descendant from /proc, kills the command
(SIGKILL, or SIGSEGV as a crash) and asserts that all those processes are gone within 5 s.
A normal end leaves nothing behind either.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from conftest import API_KEY, require_module
from imagegen import make_library

from search.lifetime import alive, cmdline, descendants
from web import serving

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
GONE_WITHIN = 5.0
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    # large enough that decoding lasts well beyond the moment of the kill
    return make_library(str(tmp_path_factory.mktemp("orphans") / "photos"), n_good=1500,
                        seed=8, with_bad=False)


def cli_env(data_dir, **extra) -> dict:
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=str(data_dir), CLIPSEARCH_MODEL=TINY,
               CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="2", CLIPSEARCH_BATCH_SIZE="8",
               PYTHONPATH=os.pathsep.join(sys.path))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def no_core_dump():
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipsearch", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=no_core_dump)


def wait_for(proc, pred, timeout: float = 240.0, what: str = "") -> list[int]:
    """Poll the descendants of ``proc`` until ``pred(pids)``; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the command ended early ({proc.returncode}) waiting for "
                                 f"{what}: {proc.stderr.read().decode()[-3000:]}")
        pids = descendants(proc.pid)
        if pred(pids):
            return pids
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill_and_check(proc, pids: list[int], sig=signal.SIGKILL) -> float:
    """Kill ``proc``; assert every pid in ``pids`` is gone within GONE_WITHIN seconds."""
    assert pids
    os.kill(proc.pid, sig)
    proc.wait(30)
    t0 = time.monotonic()
    while alive(pids) and time.monotonic() - t0 < GONE_WITHIN:
        time.sleep(0.05)
    left = {p: cmdline(p)[:100] for p in alive(pids)}
    for p in left:  # do not leave them to the next test
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"still running {GONE_WITHIN} s after the kill: {left}"
    return time.monotonic() - t0


def decoders(pids) -> list[int]:
    return [p for p in pids if "spawn_main" in cmdline(p)]


def committed(data_dir) -> int:
    import sqlite3
    try:
        con = sqlite3.connect(os.path.join(data_dir, "clipsearch.db"), timeout=5)
        try:
            return con.execute("select count(*) from media_items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["sigkill", "segfault"])
def test_killed_indexer_takes_its_decoders_and_resource_tracker(tmp_path, photos, sig):
    data = tmp_path / "data"
    proc = start(["-q", "index", photos.root, "--no-progress"], cli_env(data))
    # mid-decode: both decoder processes up and a first checkpoint committed
    pids = wait_for(proc, lambda ps: len(decoders(ps)) >= 2 and committed(data) > 0,
                    what="decoder processes at work")
    assert any("resource_tracker" in cmdline(p) for p in pids)
    kill_and_check(proc, pids, sig)


def test_a_normal_end_leaves_no_process(tmp_path):
    lib = make_library(str(tmp_path / "small"), n_good=60, seed=9, with_bad=False)
    proc = start(["-q", "index", lib.root, "--no-progress"], cli_env(tmp_path / "data"))
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(descendants(proc.pid))
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    assert seen  # decoder processes did run
    t0 = time.monotonic()
    while alive(seen) and time.monotonic() - t0 < GONE_WITHIN:
        time.sleep(0.05)
    assert not alive(seen), {p: cmdline(p) for p in alive(seen)}


def test_killed_ray_driver_takes_its_local_cluster(tmp_path, photos):
    require_module("ray", "Ray", "pip install -e '.[ray]'")
    env = cli_env(tmp_path / "data")
    proc = start(["-q", "index", photos.root, "--no-progress", "--ray", "local",
                  "--ray-shard-size", "16"], env)
    pids = wait_for(proc, lambda ps: sum("ShardEmbedder" in cmdline(p) for p in ps) >= 1
                    and any("raylet" in cmdline(p) for p in ps)
                    and any("Agent" in cmdline(p) for p in ps),
                    timeout=400, what="Ray's cluster with an actor")
    time.sleep(1)
    pids = sorted(set(pids) | set(descendants(proc.pid)))
    kill_and_check(proc, pids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_killed_server_takes_its_workers_and_their_indexing_job(tmp_path, photos, monkeypatch):
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = cli_env(tmp_path / "data", CLIPSEARCH_API_KEYS=API_KEY,
                  CLIPSEARCH_LIBRARY_ROOTS=photos.root, CLIPSEARCH_RATE_LIMIT=0,
                  TMPDIR=scratch)
    proc = start(["serve", "--workers", "2", "--port", str(port), "--no-access-log"], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if http("GET", base + "/api/health")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"the server ended early ({proc.returncode}): "
                                 f"{proc.stderr.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.5)
    status, body = http("POST", base + "/api/index", {"root": photos.root})
    assert status == 202, body
    pids = wait_for(proc, lambda ps: len(decoders(ps)) >= 2, what="the web job's decoders")
    workers = [p for p in pids if "multiprocessing" not in cmdline(p)]
    assert len(workers) >= 2, {p: cmdline(p) for p in pids}  # the two gunicorn workers
    kill_and_check(proc, sorted(set(pids) | set(descendants(proc.pid))))
    # The killed master could not remove its metrics folder; the next server's sweep does.
    left = [p.name for p in scratch.iterdir() if p.name.startswith(serving.PROM_PREFIX)]
    assert len(left) == 1 and left[0].startswith(f"{serving.PROM_PREFIX}{proc.pid}-"), left
    running = scratch / f"{serving.PROM_PREFIX}{os.getpid()}-x"  # a live server's: kept
    running.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    serving._sweep_metric_folders()
    kept = [p.name for p in scratch.iterdir() if p.name.startswith(serving.PROM_PREFIX)]
    assert kept == [running.name]
