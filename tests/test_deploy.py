"""Deployment: docker-compose files, the Dockerfile, and the compose topology run without Docker.

No Docker engine runs on our machines, so:

* the compose files are validated against the Compose Specification's JSON schema
  (vendored in tests/data, see compose-spec.NOTICE.md) and checked for what the
  deployment relies on (web waits for a healthy database, volumes declared and
  shared, ports published on loopback, GPU reservation in the GPU variant);
* the Dockerfile gets lint-level checks (stages, user, entrypoint, health check,
  extras that exist in setup.cfg, sources present and not docker-ignored);
* the topology itself runs for real when a PostgreSQL server is available
  (CLIPSEARCH_TEST_PG_URL, set by .ci/run; skipped locally without it, a failure
  under CI): the indexer service's command and environment, taken from
  docker-compose.yml, index a generated library into PostgreSQL, then the web
  service's command serves it; searches over HTTP must find the indexed files,
  and SIGTERM must stop the server cleanly.
"""
from __future__ import annotations

import configparser
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import jsonschema
import pytest
import yaml
from conftest import PG_URL, require_postgres, wipe_postgres
from imagegen import make_library

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
COMPOSE_GPU = os.path.join(ROOT, "docker-compose.gpu.yml")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
HEALTHCHECK = os.path.join(ROOT, "docker", "healthcheck.py")
SCHEMA = os.path.join(TESTS, "data", "compose-spec.json")
COMPOSE_SPEC_SHA256 = "bc50c2d79102aed8df21b3a13e56c9396c7a06da6cff5ce37629f2ee7eb41735"
TINY = os.path.join(TESTS, "tiny-clip.json")
#: the environment an operator must give (.env); everything else has defaults
OPERATOR_ENV = {"CLIPSEARCH_LIBRARY": "/srv/photos"}


# --- helpers: YAML, Compose interpolation ---------------------------------------------
def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


def interpolate(value, env: dict):
    """Compose's variable substitution (``${X}``, ``${X:-d}``, ``${X-d}``, ``${X:?e}``,
    ``${X?e}``, ``$X``, ``$$``) applied to every string of a loaded compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        present, nonempty = name in env, bool(env.get(name))
        if op in (":-", "-"):
            return env[name] if (nonempty if op == ":-" else present) else arg
        if op in (":?", "?"):
            if not (nonempty if op == ":?" else present):
                raise KeyError(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return _VAR.sub(sub, value)


def resolved(path: str = COMPOSE, env: dict | None = None) -> dict:
    return interpolate(load(path), {**OPERATOR_ENV, **(env or {})})


def published(port) -> tuple[str, str, str]:
    """(host address, published port, container port) of a ports entry."""
    if isinstance(port, dict):
        return port.get("host_ip", "0.0.0.0"), str(port.get("published", "")), str(port["target"])
    parts = str(port).rsplit(":", 2)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return "0.0.0.0", parts[0], parts[1]
    return "0.0.0.0", "", parts[0]


def volume_mounts(service: dict) -> list[dict]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append(v)
            continue
        src, _, rest = v.partition(":")
        target, _, mode = rest.partition(":")
        out.append({"type": "bind" if src.startswith((".", "/", "~", "$")) else "volume",
                    "source": src, "target": target, "read_only": "ro" in mode.split(",")})
    return out


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# --- the compose files against the specification ----------------------------------------
def test_vendored_schema_is_the_recorded_copy():
    with open(SCHEMA, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == COMPOSE_SPEC_SHA256


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=os.path.basename)
def test_compose_files_follow_the_compose_specification(validator, path):
    for doc in (load(path), resolved(path)):  # as written, and after interpolation
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes(validator):
    """The validation is not vacuous: typical mistakes are rejected."""
    good = load(COMPOSE)
    bad = copy.deepcopy(good)
    bad["services"]["web"]["depends_on"]["db"]["condition"] = "healthy"
    assert list(validator.iter_errors(bad))
    bad = copy.deepcopy(good)
    bad["services"]["web"]["restart_policy"] = "always"  # a deploy key, not a service key
    assert list(validator.iter_errors(bad))
    bad = copy.deepcopy(good)
    bad["services"]["db"]["healthcheck"]["retries"] = [12]
    assert list(validator.iter_errors(bad))


def test_an_unset_library_is_an_error_not_an_empty_folder():
    with pytest.raises(KeyError, match="CLIPSEARCH_LIBRARY"):
        interpolate(load(COMPOSE), {})


# --- what the deployment relies on --------------------------------------------------------
def test_web_and_indexer_wait_for_a_healthy_database():
    services = resolved()["services"]
    db = services["db"]
    assert db["image"].split(":")[0] == "postgres" and db["image"].split(":")[1] == "16"
    test = db["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    for name in ("web", "indexer"):
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy", name
    env = services["web"]["environment"]
    url = env["CLIPSEARCH_DB_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    user = db["environment"]["POSTGRES_USER"]
    password = db["environment"]["POSTGRES_PASSWORD"]
    assert url == (f"postgresql+psycopg://{user}:{password}@db:5432/"
                   f"{db['environment']['POSTGRES_DB']}")


def test_volumes_are_declared_and_the_data_volume_is_shared():
    doc = resolved()
    services = doc["services"]
    declared = set(doc.get("volumes") or {})
    for name, service in services.items():
        for m in volume_mounts(service):
            if m["type"] == "volume":
                assert m["source"] in declared, f"{name} uses undeclared volume {m['source']}"
    mounts = {name: {m["target"]: m for m in volume_mounts(s)} for name, s in services.items()}
    assert mounts["db"]["/var/lib/postgresql/data"]["type"] == "volume"
    web_data, idx_data = mounts["web"]["/data"], mounts["indexer"]["/data"]
    assert web_data["type"] == idx_data["type"] == "volume"
    assert web_data["source"] == idx_data["source"]
    for name in ("web", "indexer"):
        lib = mounts[name]["/library"]
        assert lib["type"] == "bind" and lib["read_only"] is True
        assert lib["source"] == OPERATOR_ENV["CLIPSEARCH_LIBRARY"]
        assert not lib.get("bind", {}).get("create_host_path")
        env = services[name]["environment"]
        assert env["CLIPSEARCH_DATA_DIR"] == "/data"


def test_published_ports_are_on_loopback_by_default():
    services = resolved()["services"]
    seen = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            host, pub, target = published(port)
            assert host == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            seen += 1
    assert seen == 1 and "ports" not in services["db"] and "ports" not in services["indexer"]
    assert published(services["web"]["ports"][0]) == ("127.0.0.1", "8000", "8000")
    wider = resolved(env={"CLIPSEARCH_PUBLISH_ADDRESS": "0.0.0.0",
                          "CLIPSEARCH_PUBLISH_PORT": "9000"})["services"]["web"]["ports"][0]
    assert published(wider) == ("0.0.0.0", "9000", "8000")


def test_service_commands_profiles_and_health_checks():
    services = resolved()["services"]
    web, indexer = services["web"], services["indexer"]
    assert web["command"][0] == "serve"
    assert web["command"][web["command"].index("--host") + 1] == "0.0.0.0"
    assert web["command"][web["command"].index("--port") + 1] == published(web["ports"][0])[2]
    assert "profiles" not in web and "profiles" not in services["db"]
    assert indexer["profiles"] == ["index"]
    assert indexer["command"][:2] == ["index", "/library"]
    assert indexer["healthcheck"] == {"disable": True}
    assert indexer["restart"] == "no"
    for s in (web, indexer):
        assert s["build"]["target"] == "cpu" and s["image"] == "clipsearch:cpu"


def test_gpu_variant_reserves_nvidia_gpus_and_uses_the_gpu_image():
    gpu = resolved(COMPOSE_GPU)["services"]
    base = resolved()["services"]
    assert set(gpu) == {"web", "indexer"} <= set(base)
    for name in ("web", "indexer"):
        s = gpu[name]
        devices = s["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
        assert s["build"]["target"] == "gpu" and s["image"] == "clipsearch:gpu"
        assert s["environment"]["CLIPSEARCH_DEVICE"] == "cuda"
        assert s["environment"]["CLIPSEARCH_USE_GPU"] == "true"


# --- Dockerfile ---------------------------------------------------------------------------
def dockerfile_stages() -> dict[str, dict]:
    """name -> {"from": base, "lines": [instructions]} (continuation lines joined)."""
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    args = {}
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and current is None and "=" in rest:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            base = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a.group(1), ""), m.group(1))
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = {"from": base, "lines": []}
        elif current is not None:
            stages[current]["lines"].append((word, rest))
    return stages


def _chain(stages: dict, name: str) -> list[tuple[str, str]]:
    """Instructions in effect for stage ``name``, its base stages' first."""
    base = stages[name]["from"]
    return (_chain(stages, base) if base in stages else []) + stages[name]["lines"]


def test_dockerfile_builds_both_images_from_setup_cfg():
    stages = dockerfile_stages()
    targets = {resolved()["services"]["web"]["build"]["target"],
               resolved(COMPOSE_GPU)["services"]["web"]["build"]["target"]}
    assert targets == {"cpu", "gpu"} <= set(stages)
    assert list(stages)[-1] == "cpu"  # `docker build .` without --target gives the CPU image
    assert stages["base"]["from"] == "python:3.11-slim"
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extras = set(cfg["options.extras_require"])
    # the CPU image carries OpenVINO for CLIPSEARCH_PRECISION=bf16/int8; the GPU one runs
    # fp16 on CUDA and does not need it; both carry the bundled clipsearch-mini-lite2's trunk
    wanted = {"cpu": {"cpu", "postgres", "openvino", "lite2"}, "gpu": {"gpu", "postgres", "lite2"}}
    for name, want in wanted.items():
        chain = _chain(stages, name)
        runs = " ".join(rest for word, rest in chain if word == "RUN")
        assert re.search(r"torch==\S+ torchvision==\S+", runs)
        m = re.search(r'pip install "/src\[([a-z0-9,]+)\]"', runs)
        assert m and set(m.group(1).split(",")) == want and want <= extras, runs
        users = [rest for word, rest in chain if word == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{name} runs as root"
        entry = [rest for word, rest in chain if word == "ENTRYPOINT"]
        assert json.loads(entry[-1]) == ["clipsearch"]
        env = " ".join(rest for word, rest in chain if word == "ENV")
        assert "CLIPSEARCH_DATA_DIR=/data" in env
        health = [rest for word, rest in chain if word == "HEALTHCHECK"]
        assert health and "clipsearch-healthcheck" in health[-1]
    cpu_runs = " ".join(rest for word, rest in stages["cpu"]["lines"] if word == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu_runs
    with open(HEALTHCHECK, encoding="utf-8") as f:
        assert "/api/health" in f.read()


def test_dockerfile_copies_only_sources_that_exist_and_are_not_docker_ignored():
    with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    copied = []
    for stage in dockerfile_stages().values():
        for word, rest in stage["lines"]:
            if word == "COPY" and "--from" not in rest:
                copied += [p for p in rest.split()[:-1] if not p.startswith("--")]
    needed = {"setup.cfg", "pyproject.toml", "README.md", "search/", "indexer/", "web/"}
    assert needed <= set(copied)
    for path in copied:
        assert os.path.exists(os.path.join(ROOT, path)), path
        assert path.rstrip("/").split("/")[0] not in ignored, f"{path} is in .dockerignore"


def test_healthcheck_reports_a_dead_server():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, HEALTHCHECK, f"http://127.0.0.1:{port}/api/health"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "unhealthy" in proc.stderr


# --- the topology without Docker ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clipsearch() -> list[str]:
    """The `clipsearch` console script of this environment (what the image's entrypoint is)."""
    script = os.path.join(os.path.dirname(sys.executable), "clipsearch")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "clipsearch"]


def _as_compose_runs(service: dict, *, data_dir: str, library: str, port: int) -> tuple[list, dict]:
    """Command line and environment of a compose service, mapped from the containers'
    paths and network onto this machine: /data, /library, the db host, the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    for key, value in service["environment"].items():
        value = str(value)
        if key == "CLIPSEARCH_DB_URL":
            value = PG_URL
        env[key] = {"/library": library, "/data": data_dir}.get(value, value)
    # The test can download no weights: the tiny random model instead of compose's default.
    env.update(CLIPSEARCH_MODEL=TINY, CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_DEVICE="cpu",
               CLIPSEARCH_WORKERS="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    args = [library if a == "/library" else a for a in service["command"]]
    if "--host" in args:
        args[args.index("--host") + 1] = "127.0.0.1"
    if "--port" in args:
        args[args.index("--port") + 1] = str(port)
    return _clipsearch() + args, env


def _get_json(url: str, timeout: float = 30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def _post_image(url: str, path: str, fields: dict) -> dict:
    boundary = uuid.uuid4().hex
    body = b""
    for k, v in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                 ).encode()
    with open(path, "rb") as f:
        data = f.read()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
             f"filename=\"{os.path.basename(path)}\"\r\nContent-Type: application/octet-stream"
             f"\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.mark.postgres
@pytest.mark.slow
def test_compose_topology_runs_without_docker(tmp_path):
    require_postgres()
    from sqlalchemy import create_engine, text

    services = resolved()["services"]
    library = os.path.realpath(str(tmp_path / "library"))
    lib = make_library(library, n_good=12, with_bad=False)
    data_dir = str(tmp_path / "data")  # the shared clipsearch-data volume
    port = _free_port()
    wipe_postgres(PG_URL)
    try:
        # the indexer service: a one-shot job over the read-only library
        cmd, env = _as_compose_runs(services["indexer"], data_dir=data_dir, library=library,
                                    port=port)
        idx = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert idx.returncode == 0, idx.stdout + idx.stderr
        assert "added 12," in idx.stdout
        eng = create_engine(PG_URL)
        with eng.connect() as c:
            stored = set(c.execute(text("SELECT path FROM media_items WHERE status = 'indexed'"))
                         .scalars())
            revision = c.execute(text("SELECT version_num FROM alembic_version")).scalar()
        eng.dispose()
        assert stored == set(lib.good)
        from search.migrate import head_revision
        assert revision == head_revision()
        assert os.path.exists(os.path.join(data_dir, "index", "images.faiss"))

        # the web service, on the same database and data volume
        cmd, env = _as_compose_runs(services["web"], data_dir=data_dir, library=library,
                                    port=port)
        assert env["CLIPSEARCH_WEB_WORKERS"] == "2"
        base = f"http://127.0.0.1:{port}"
        with open(tmp_path / "web.out", "w") as out, open(tmp_path / "web.err", "w") as err:
            web = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 180
            health = None
            while health is None:
                assert web.poll() is None, (tmp_path / "web.err").read_text()
                assert time.monotonic() < deadline, "web service never became healthy"
                try:
                    health = _get_json(base + "/api/health", timeout=5)
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.3)
            assert health["status"] == "ok" and health["images"] == 12
            probe = subprocess.run([sys.executable, HEALTHCHECK, base + "/api/health"],
                                   capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, probe.stderr

            # paths in answers are relative to the library root
            rel = {os.path.relpath(p, library).replace(os.sep, "/"): p for p in lib.good}
            page = _get_json(base + "/api/search?q=a+colourful+pattern&k=50")
            assert {r["path"] for r in page["results"]} == set(rel)
            for path in lib.good[:3]:  # an indexed file finds itself first
                hits = _post_image(base + "/api/search/image", path, {"k": "3"})["results"]
                assert rel[hits[0]["path"]] == path and hits[0]["score"] > 0.99
                with urllib.request.urlopen(base + hits[0]["file_url"], timeout=30) as r:
                    with open(path, "rb") as f:
                        assert r.read() == f.read()  # served from the mounted library
        finally:
            web.send_signal(signal.SIGTERM)
            try:
                code = web.wait(timeout=60)
            except subprocess.TimeoutExpired:
                web.kill()
                raise
        errors = (tmp_path / "web.err").read_text()
        assert code == 0, errors
        assert "Traceback" not in errors, errors
        probe = subprocess.run([sys.executable, HEALTHCHECK, base + "/api/health"],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 1
    finally:
        wipe_postgres(PG_URL)
        shutil.rmtree(data_dir, ignore_errors=True)
