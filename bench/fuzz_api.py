"""The API against its own contract: schemathesis with every check, on a served library.

1. N small real images (PNG and JPEG, most JPEGs with EXIF dates and cameras, some
   with sidecar captions) in a few folders, indexed by ``clipsearch index`` with the
   tiny open_clip test model (random weights: the contract does not need meaning).
2. A text corpus added with ``clipsearch texts add``.
3. ``clipsearch serve`` on 127.0.0.1 with an API key, library roots set (so
   ``POST /api/index`` can run), rate limits and the failed-key lockout off (the
   fuzzer sends thousands of requests and wrong keys on purpose; the limits have
   their own tests).
4. ``schemathesis run`` on ``/api/openapi.json`` with ``--checks all``, N examples per
   operation and the chosen phases (default: all four, the stateful one included),
   the key in the Authorization header, uploads drawn as real images in the allowed
   formats (tests/fuzz_hooks.py: what the document's media types say).

Run by hand (the issue's configuration; about 20-30 minutes on 2 cores):

    python bench/fuzz_api.py --items 8000 --examples 60 --json fuzz.json

Prints schemathesis' own summary and writes its figures (cases, failures by check,
exit status) to --json. The library is built in a temporary folder (or --dir, kept).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "tiny-clip.json")
KEY = "fuzz-key-0123456789abcdef"
FOLDERS = ("2019/summer", "2020/winter", "2021", "misc/deep/er")
WORDS = ("red blue green sunset beach forest city night dog cat boat tree snow "
         "mountain river street flower bird car people").split()


#: 414 (URL longer than gunicorn's request line, answered before the app and documented)
#: and 413 (body over the upload limit) reject a request too; the rest is schemathesis'
#: default list. A valid Range header may still lie past the file's end: 416 accepts it.
ST_CONFIG = """[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415",
                     "422", "428", "429", "5xx"]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "416", "429", "5xx"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_library(root: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = os.path.join(root, FOLDERS[i % len(FOLDERS)])
        os.makedirs(folder, exist_ok=True)
        w, h = int(rng.integers(24, 72)), int(rng.integers(24, 72))
        cells = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(cells).resize((w, h), Image.NEAREST)
        if i % 2 == 0:
            exif = Image.Exif()
            if i % 6:
                when = dt.datetime(2015, 1, 1) + dt.timedelta(hours=int(rng.integers(0, 80_000)))
                exif[0x0132] = when.strftime("%Y:%m:%d %H:%M:%S")
                exif[0x010F] = "FuzzCam"
                exif[0x0110] = f"Model {i % 5}"
            path = os.path.join(folder, f"img{i:05d}.jpg")
            img.save(path, "JPEG", quality=80, exif=exif.tobytes())
        else:
            path = os.path.join(folder, f"img{i:05d}.png")
            img.save(path, "PNG")
        if i % 10 == 1:
            with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
                f.write(" ".join(rng.choice(WORDS, size=4)))


def run(cmd: list[str], env: dict) -> None:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"  {' '.join(cmd[2:4])}: {time.perf_counter() - t0:.0f} s", flush=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=10) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def summarise(output: str) -> dict:
    """Figures from schemathesis' text summary (its format as of 4.x)."""
    out: dict = {}
    m = re.search(r"Test cases:\s*\n\s*(\d+) generated, (\d+) found (\d+) unique failures", output)
    if m:
        out.update(cases=int(m.group(1)), failing_cases=int(m.group(2)),
                   unique_failures=int(m.group(3)))
    else:
        m = re.search(r"Test cases:\s*\n\s*(\d+) generated, (\d+) passed", output)
        if m:
            out.update(cases=int(m.group(1)), failing_cases=0, unique_failures=0)
    m = re.search(r"API Operations:\s*\n\s*Selected: (\d+)/(\d+)\s*\n\s*Tested: (\d+)", output)
    if m:
        out.update(operations_selected=int(m.group(1)), operations_tested=int(m.group(3)))
    checks = {}
    for name, ok, total in re.findall(r"[✓✘]\s+(\w+)\s+(\d+)/(\d+) passed", output):
        checks[name] = {"passed": int(ok), "total": int(total)}
    if checks:
        out["checks"] = checks
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=8000)
    p.add_argument("--examples", type=int, default=60, help="examples per operation")
    p.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    p.add_argument("--st-workers", default="2", help="schemathesis workers")
    p.add_argument("--server-workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", help="build here and keep it (default: a temporary folder)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()

    base = args.dir or tempfile.mkdtemp(prefix="clipsearch-fuzz-")
    library, data = os.path.join(base, "library"), os.path.join(base, "data")
    env = {**os.environ, "CLIPSEARCH_DATA_DIR": data, "CLIPSEARCH_MODEL": TINY,
           "CLIPSEARCH_PRETRAINED": "none", "CLIPSEARCH_DEVICE": "cpu",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    clipsearch = [sys.executable, "-m", "clipsearch"]
    try:
        if not os.path.isfile(os.path.join(base, "built")):  # (a run changes it: rebuild
            shutil.rmtree(library, ignore_errors=True)          # with a fresh --dir to compare)
            shutil.rmtree(data, ignore_errors=True)
            t0 = time.perf_counter()
            write_library(library, args.items, args.seed)
            print(f"  wrote {args.items} images: {time.perf_counter() - t0:.0f} s", flush=True)
            run(clipsearch + ["index", library, "--no-progress"], env)
            corpus = os.path.join(base, "corpus.txt")
            rng = np.random.default_rng(args.seed + 1)
            with open(corpus, "w", encoding="utf-8") as f:
                for _ in range(500):
                    f.write("a photo of " + " ".join(rng.choice(WORDS, size=3)) + "\n")
            run(clipsearch + ["texts", "add", corpus, "--source", "corpus"], env)
            open(os.path.join(base, "built"), "w").close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve_env = {**env, "CLIPSEARCH_API_KEYS": KEY, "CLIPSEARCH_LIBRARY_ROOTS": library,
                     "CLIPSEARCH_RATE_LIMIT": "0", "CLIPSEARCH_FILE_RATE_LIMIT": "0",
                     "CLIPSEARCH_AUTH_FAILURE_LIMIT": "0"}
        server = subprocess.Popen(
            clipsearch + ["serve", "--port", str(port), "--workers", str(args.server_workers),
                          "--threads", "4", "--no-access-log"],
            env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            wait_ready(url, server)
            config = os.path.join(base, "schemathesis.toml")
            with open(config, "w", encoding="utf-8") as f:
                f.write(ST_CONFIG)
            cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", config, "run",
                   f"{url}/api/openapi.json",
                   "--checks", "all", "--max-examples", str(args.examples),
                   "--phases", args.phases, "--workers", args.st_workers,
                   "--header", f"Authorization: Bearer {KEY}",
                   "--seed", str(args.seed), "--suppress-health-check", "all",
                   "--generation-database", "none", "--request-timeout", "60", "--no-color",
                   "--report", "json", "--report-json-path", os.path.join(base, "report.json")]
            # Uploads drawn as real images, as the document's media types ask (tests/fuzz_hooks.py).
            st_env = {**env, "SCHEMATHESIS_HOOKS": "fuzz_hooks",
                      "PYTHONPATH": os.path.join(ROOT, "tests") + os.pathsep + env["PYTHONPATH"]}
            t0 = time.perf_counter()
            st = subprocess.run(cmd, capture_output=True, text=True, env=st_env)
            wall = time.perf_counter() - t0
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                _, server_err = server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                _, server_err = server.communicate()
        log_path = os.path.join(args.dir or os.getcwd(), "fuzz_api.log")
        with open(log_path, "w", encoding="utf-8") as f:
            f.write(st.stdout + st.stderr)
        print(st.stdout[-6000:])
        print(st.stderr[-4000:], file=sys.stderr)
        print(f"full schemathesis output: {log_path}")
        figures = {"items": args.items, "examples": args.examples, "phases": args.phases,
                   "exit_code": st.returncode, "wall_s": round(wall, 1),
                   "server_tracebacks": server_err.count("Traceback"), **summarise(st.stdout)}
        print(json.dumps(figures, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**figures, "command": " ".join(sys.argv)}, f, indent=2)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
