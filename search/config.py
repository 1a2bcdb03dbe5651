"""Settings: one frozen object, built once at the edge (CLI, web, tests) and passed down.

Library code never reads ``os.environ``; the edge calls :func:`Settings.from_env`
with a mapping (normally ``os.environ``) and explicit overrides from options.
Every setting is declared once in :data:`SETTINGS` with its environment
variable, default and help text; a test checks that each one is documented in
the README.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import BadRequest

DEFAULT_MODEL = "ViT-B-32"


def _setting(default: Any, help: str, *, env: str | None = None, kind: str = "str"):
    return field(default=default, metadata={"help": help, "env": env, "kind": kind})


@dataclass(frozen=True)
class Settings:
    """All knobs of clipsearch. Paths are absolute once built by :meth:`from_env`."""

    data_dir: str = _setting(
        "./data", "Directory holding the SQLite store, the FAISS index files and caches.",
        env="CLIPSEARCH_DATA_DIR")
    db_url: str | None = _setting(
        None, "SQLAlchemy URL of the metadata store; default sqlite:///DATA_DIR/clipsearch.db.",
        env="CLIPSEARCH_DB_URL")
    model: str = _setting(
        DEFAULT_MODEL, "open_clip model name, 'clipsearch-mini', or a model-config JSON file.",
        env="CLIPSEARCH_MODEL")
    pretrained: str | None = _setting(
        None, "open_clip pretrained tag or a local checkpoint file; 'none' for seeded random "
        "weights (tests only); default: the model's own (laion2b_s34b_b79k for ViT-B-32, the "
        "bundled checkpoint for clipsearch-mini).", env="CLIPSEARCH_PRETRAINED")
    hub_address: str = _setting(
        "huggingface.co:443", "HOST:PORT of the model hub, probed before weights that are not "
        "cached are downloaded; when it does not answer, loading fails at once with "
        "instructions instead of minutes of retries.", env="CLIPSEARCH_HUB_ADDRESS")
    device: str | None = _setting(
        None, "Torch device for the encoder (cuda, cpu); default: cuda when available.",
        env="CLIPSEARCH_DEVICE")
    precision: str = _setting(
        "auto", "Encoder forward pass: auto, fp32 (eager PyTorch), fp32-ov, bf16 or int8 "
        "(OpenVINO, CPU; needs clipsearch[openvino]), fp16 (CUDA). auto: fp16 on CUDA; on the "
        "CPU the fastest mode measured as faithful for the model (top-10 agreement >= 0.98, "
        "recall@10 within 0.5 points of fp32), else fp32.", env="CLIPSEARCH_PRECISION")
    batch_size: int = _setting(32, "Images per encoder batch.", env="CLIPSEARCH_BATCH_SIZE",
                               kind="int")
    workers: int | None = _setting(
        None, "Decoder worker processes; default: chosen per job from the measured cost of "
        "decoding a sample of its files against the encoder's forward pass.",
        env="CLIPSEARCH_WORKERS",
        kind="int")
    torch_threads: int | None = _setting(
        None, "Threads the encoder (torch or OpenVINO) may use on the CPU; default: all cores.",
        env="CLIPSEARCH_TORCH_THREADS", kind="int")
    max_pixels: int = _setting(
        178_956_970, "Images with more pixels than this are skipped (decompression-bomb guard).",
        env="CLIPSEARCH_MAX_PIXELS", kind="int")
    video_fps: float = _setting(
        1.0, "Frames sampled per second of video; each sample is embedded, and runs of "
        "similar samples become a video's moments.", env="CLIPSEARCH_VIDEO_FPS", kind="float")
    video_max_seconds: int = _setting(
        6 * 3600, "Videos longer than this (seconds) are skipped.",
        env="CLIPSEARCH_VIDEO_MAX_SECONDS", kind="int")
    ocr: bool = _setting(
        False, "Read the text shown in images (OCR) while indexing, into the keyword index and "
        "the item detail; needs the ocr extra (pip install 'clipsearch[ocr]'). "
        "'clipsearch index --ocr' reads already indexed images without re-embedding.",
        env="CLIPSEARCH_OCR", kind="bool")
    checkpoint_every: int = _setting(
        256, "Indexed files per committed checkpoint; a killed job resumes from the last one.",
        env="CLIPSEARCH_CHECKPOINT_EVERY", kind="int")
    index_type: str = _setting(
        "auto", "Vector index: auto, flat, ivf, hnsw, ivfpq, ondisk.", env="CLIPSEARCH_INDEX_TYPE")
    ondisk_layout: str = _setting(
        "auto", "Layout of the ondisk index: ivf (lists on disk), scan (every code in memory, "
        "for vectors without cluster structure), or auto (tested on the training sample).",
        env="CLIPSEARCH_ONDISK_LAYOUT")
    memory_budget_mb: int = _setting(
        4096, "Memory the vector index may use; guides the auto index choice.",
        env="CLIPSEARCH_MEMORY_BUDGET_MB", kind="int")
    search_threads: int = _setting(
        1, "FAISS threads per query in the web service (its requests already run in "
        "parallel; a second thread waits for a core held by another request).",
        env="CLIPSEARCH_SEARCH_THREADS", kind="int")
    use_gpu: bool | None = _setting(
        None, "Put the FAISS index on the GPU; default: when FAISS reports one.",
        env="CLIPSEARCH_USE_GPU", kind="bool")
    # --- web service -------------------------------------------------------
    host: str = _setting("127.0.0.1", "Address the web service listens on.",
                         env="CLIPSEARCH_HOST")
    port: int = _setting(8000, "Port of the web service.", env="CLIPSEARCH_PORT", kind="int")
    web_workers: int = _setting(1, "WSGI worker processes of the web service.",
                                env="CLIPSEARCH_WEB_WORKERS", kind="int")
    api_keys: tuple[str, ...] = _setting(
        (), "Comma-separated API keys allowed to index, delete and change texts; each at least "
        "16 characters (the server does not start with a shorter one).",
        env="CLIPSEARCH_API_KEYS", kind="list")
    search_requires_key: bool = _setting(
        False, "Require an API key for search requests too.",
        env="CLIPSEARCH_SEARCH_REQUIRES_KEY", kind="bool")
    session_hours: int = _setting(
        12, "Lifetime in hours of the search page's session cookie (the page trades an API "
        "key for it when search requires a key).", env="CLIPSEARCH_SESSION_HOURS", kind="int")
    cors_origins: tuple[str, ...] = _setting(
        (), "Comma-separated origins allowed by CORS; empty means CORS off.",
        env="CLIPSEARCH_CORS_ORIGINS", kind="list")
    rate_limit: int = _setting(
        120, "Search, item and session requests per minute per client; 0 disables the limit.",
        env="CLIPSEARCH_RATE_LIMIT", kind="int")
    file_rate_limit: int = _setting(
        1200, "Thumbnail and file requests per minute per client; 0 disables the limit.",
        env="CLIPSEARCH_FILE_RATE_LIMIT", kind="int")
    auth_failure_limit: int = _setting(
        10, "Failed key checks (wrong or malformed key, forged session cookie) per minute per "
        "client, on any route; past it every request carrying a credential gets 429 until the "
        "bucket refills. 0 disables the limit (not recommended).",
        env="CLIPSEARCH_AUTH_FAILURE_LIMIT", kind="int")
    trusted_proxies: int = _setting(
        0, "Reverse proxies in front of the web service whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted (a count of hops, e.g. 1 behind one TLS proxy); 0 trusts "
        "none: the client is the TCP peer.", env="CLIPSEARCH_TRUSTED_PROXIES", kind="int")
    max_upload_mb: int = _setting(20, "Largest accepted upload body, in MiB.",
                                  env="CLIPSEARCH_MAX_UPLOAD_MB", kind="int")
    library_roots: tuple[str, ...] = _setting(
        (), "Comma-separated library roots that POST /api/index may index.",
        env="CLIPSEARCH_LIBRARY_ROOTS", kind="list")
    write_wait: float = _setting(
        10.0, "Seconds a write over the API (indexing job, deletion, texts) waits for another "
        "writer of the library (a job, a CLI index) before answering 409.",
        env="CLIPSEARCH_WRITE_WAIT", kind="float")

    # ------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``env`` (variables in :data:`SETTINGS`) and explicit overrides.

        Overrides whose value is ``None`` are ignored, so CLI options left unset
        fall back to the environment and then to the defaults.
        Raises :class:`BadRequest` for a malformed value.
        """
        env = env or {}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = f.metadata.get("env")
            if var and env.get(var) not in (None, ""):
                values[f.name] = _parse(f.metadata["kind"], env[var], var)
        for name, value in overrides.items():
            if name not in {f.name for f in dataclasses.fields(cls)}:
                raise TypeError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        settings = cls(**values)
        return settings.resolved()

    def resolved(self) -> "Settings":
        data_dir = str(Path(self.data_dir).expanduser().resolve())
        return dataclasses.replace(
            self, data_dir=data_dir,
            library_roots=tuple(str(Path(r).expanduser().resolve()) for r in self.library_roots))

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return "sqlite:///" + os.path.join(self.data_dir, "clipsearch.db")

    @property
    def index_dir(self) -> str:
        return os.path.join(self.data_dir, "index")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.data_dir, "cache")


#: Float settings where 0 is meaningful.
ZERO_ALLOWED = frozenset({"CLIPSEARCH_WRITE_WAIT"})


def _parse(kind: str, raw: str, name: str) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            value = float(raw)
            # every float setting is a rate or a duration: finite, and 0 only where it
            # means "none" (CLIPSEARCH_WRITE_WAIT=0: do not wait)
            if not (value > 0 or (value == 0 and name in ZERO_ALLOWED)) or value == float("inf"):
                raise ValueError(raw)
            return value
        if kind == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "list":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        return raw
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a valid {kind}") from None


#: (name, environment variable, default, help) of every setting, for docs and tests.
SETTINGS = tuple(
    (f.name, f.metadata.get("env"), f.default, f.metadata["help"])
    for f in dataclasses.fields(Settings)
)
