"""CI never passes by skipping: a test whose component is missing fails under ``CI``.

Runs pytest in a subprocess on a small test file that needs a component that does not
exist, with and without ``CI=true``; checks that ``.ci/run`` sets the flag, and that no
test file skips on its own (only through ``conftest.require``, or for the platform).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
#: Skips that are about the platform or hardware, not a missing component.
PLATFORM_SKIPS = {
    "test_index.py": "faiss.get_num_gpus() > 0",
    "test_batching.py": 'os.name != "posix"',
    "test_workers.py": 'os.name != "posix"',
    "test_file_serving.py": 'os.name != "posix"',
    "test_chaos.py": 'not sys.platform.startswith("linux")',
    "test_orphans.py": 'not sys.platform.startswith("linux")',
    "test_allocator.py": 'not sys.platform.startswith("linux")',  # glibc's mallopt
    "test_precision.py": '"BF16" not in cpu_capabilities()',
    "test_gpu_check.py": "torch.cuda.is_available()",
}

NEEDS_MISSING = '''
from conftest import require, require_module

absent = require_module("clipsearch_no_such_module", "Nothing", "not installable")


def test_never_runs():
    pass
'''
NEEDS_MISSING_IN_TEST = '''
from conftest import require


def test_needs_a_server():
    require("A server", False, "none here")


def test_has_what_it_needs():
    require("A server", True, "here")
'''


def _pytest(tmp_path, source: str, ci: str | None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_component.py"
    test.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(test)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)


def test_missing_module_skips_locally_and_fails_under_ci(tmp_path):
    local = _pytest(tmp_path, NEEDS_MISSING, None)
    assert local.returncode in (0, 5), local.stdout  # 5: every test skipped at collection
    assert "1 skipped" in local.stdout and "Nothing is not available" in local.stdout
    for flag in ("true", "1"):
        ci = _pytest(tmp_path, NEEDS_MISSING, flag)
        assert ci.returncode != 0, ci.stdout
        assert "Nothing is not available" in ci.stdout and "under CI" in ci.stdout
    assert _pytest(tmp_path, NEEDS_MISSING, "false").returncode in (0, 5)


def test_missing_component_in_a_test_fails_under_ci(tmp_path):
    local = _pytest(tmp_path, NEEDS_MISSING_IN_TEST, None)
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    ci = _pytest(tmp_path, NEEDS_MISSING_IN_TEST, "true")
    assert ci.returncode == 1 and "1 failed, 1 passed" in ci.stdout, ci.stdout
    assert "A server is not available: none here" in ci.stdout


def test_ci_script_sets_the_flag():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        script = f.read()
    assert re.search(r"^export CI=true$", script, re.M)
    # ...before the tests run.
    assert script.index("export CI=true") < script.index("make test")


def test_no_test_skips_on_its_own():
    """Every skip for a missing component goes through conftest.require (which fails
    under CI); the only other skips are about the platform."""
    found = {}
    for name in sorted(os.listdir(TESTS)):
        if not name.endswith(".py") or name == "conftest.py":
            continue
        with open(os.path.join(TESTS, name), encoding="utf-8") as f:
            text = f.read()
        for pattern in (r"pytest\.skip\(", r"importorskip\(", r"mark\.skipif\([^\n]*",
                        r"pytest\.mark\.skip\b", r"pytest\.xfail\(", r"mark\.xfail"):
            for m in re.finditer(pattern, text):
                if name == os.path.basename(__file__):
                    continue
                found.setdefault(name, []).append(m.group(0))
    for name, condition in PLATFORM_SKIPS.items():
        hits = found.pop(name, [])
        assert hits and all(condition in h for h in hits), (name, hits)
    assert not found, f"skips outside conftest.require: {found}"
