"""`clipsearch demo` end to end: a real subprocess serving the sample gallery on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_demo_serves_the_gallery_and_stops_cleanly(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for var in ("CLIPSEARCH_MODEL", "CLIPSEARCH_PRETRAINED", "CLIPSEARCH_DATA_DIR", "CLIPSEARCH_DB_URL"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "demo", "--dir", str(tmp_path / "demo"),
         "--port", str(port), "--no-access-log"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = get_json(base + "/api/health")
                break
            except OSError:
                time.sleep(0.5)
        assert health is not None, "demo never answered /api/health"
        assert health["images"] == 300 and health["model"]["name"] == "clipsearch-mini"
        hits = get_json(base + "/api/search?q=a+red+circle&k=5")["results"]
        assert len(hits) == 5
        # the bundled model really searches: the gallery's red circle comes first
        assert "red-circle" in hits[0]["name"], [h["name"] for h in hits]
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            assert b"clipsearch" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log
    assert f"http://127.0.0.1:{port}/" in log and "Traceback" not in log
