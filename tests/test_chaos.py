"""The chaos benchmark, shortened to 55 s of load: the web service under search clients,
an indexer SIGKILLed and restarted, second writers, deletions and texts over the API, on
SQLite and on PostgreSQL. Every target must hold (bench/bench_chaos.py says which)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from stores import db_url_for

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "bench_chaos.py")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_short_chaos_run_meets_every_target(kind, tmp_path):
    url = db_url_for(kind, tmp_path)
    cmd = [sys.executable, BENCH, "--duration", "55", "--initial", "400", "--growth", "3",
           "--clients", "4", "--kill-every", "2", "--second-every", "12",
           "--workdir", str(tmp_path / "chaos"), "--json", str(tmp_path / "chaos.json")]
    if url:
        cmd += ["--db-url", url, "--wipe"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert os.path.exists(tmp_path / "chaos.json"), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.load(open(tmp_path / "chaos.json"))
    summary = {k: v for k, v in result.items() if k not in ("notes", "orphan_processes")}
    assert result["targets_met"], json.dumps(result, indent=1)
    assert proc.returncode == 0, summary
    assert result["kills"] >= 1, summary  # the indexer was killed mid-run at least once
    assert result["requests"] > 100 and result["5xx"] == 0, summary
    assert result["second_writer"], summary  # a second writer was started and handled
    assert result["lost_files"] == result["doubled_files"] == 0, summary
    assert result["orphans"] == 0, result["orphan_processes"]
