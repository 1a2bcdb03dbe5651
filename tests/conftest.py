"""Shared fixtures: a real indexed library of generated images, and Flask apps over it.

* ``tiny_model`` (session): path of the tiny open_clip config (random weights, seed 0).
* ``encoder`` (session): that model loaded once for the whole session.
* ``make_settings``: ``Settings`` for a data directory with the tiny model and test defaults.
* ``indexed_library`` (session): 60 generated PNG/JPEG images in coloured patterns under
  three folders, some with EXIF dates and cameras, three with sidecar captions,
  plus a small text corpus; indexed once by the real ``IndexJob``. Read-only:
  tests that write use ``writable_library``.
* ``app`` / ``client`` (session / function): ``web.create_app`` over ``indexed_library``
  (API key ``API_KEY``, no rate limit); ``make_app(**overrides)`` builds another app over
  the same library with other settings (sharing the loaded service).
* ``writable_library`` (function): a fresh 12-image library for tests that index, delete
  or change texts.
* ``live_server`` (session): ``app`` served by werkzeug on 127.0.0.1 in a thread; its URL.

Optional components (PostgreSQL, Chromium, Ray, schemathesis, pillow-heif) go through
:func:`require` / :func:`require_module`: a test whose component is missing is skipped on a
developer's machine and FAILS under CI (``CI`` set, as ``.ci/run`` does), so CI never passes
by skipping.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import os
import socket
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

TESTS = os.path.dirname(os.path.abspath(__file__))
TINY_MODEL = os.path.join(TESTS, "tiny-clip.json")
API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

FOLDERS = ("warm", "cool", "mixed/deep")
CORPUS = [
    "a red square on a white background", "blue stripes", "a green checkerboard",
    "a yellow gradient", "people on a beach", "a dark night sky", "an orange circle",
    "purple and pink noise", "a photo of a cat", "a photo of a dog", "mountains at sunrise",
    "a city street at night", "a bowl of fruit", "a sailing boat", "snow on trees",
    "a plate of pasta", "a bicycle leaning on a wall", "a stack of books",
]


def under_ci() -> bool:
    """Whether the tests run under CI (``CI`` set to anything but an empty or false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require(component: str, available: bool, why: str) -> None:
    """Skip the calling test (or module) when ``component`` is missing, FAIL under CI.

    ``why``: what is missing and how to get it. Callable in a test, a fixture or at
    module level."""
    if available:
        return
    message = f"{component} is not available: {why}"
    if under_ci():
        pytest.fail(f"{message} (under CI every test must run; install it)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, component: str | None = None, why: str = ""):
    """``importlib.import_module(name)``, or :func:`require` fails/skips when it is absent."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require(component or name, False, f"{why or 'pip install it'} ({e})")


#: A PostgreSQL database the PostgreSQL tests may wipe (.ci/run starts one).
PG_URL = os.environ.get("CLIPSEARCH_TEST_PG_URL")


def require_postgres() -> str:
    """The test database URL; skips (locally) or fails (CI) without one."""
    require("PostgreSQL", bool(PG_URL), "set CLIPSEARCH_TEST_PG_URL to a database the tests "
            "may wipe (.ci/run starts one)")
    return PG_URL


def closed_port() -> tuple[socket.socket, int]:
    """A bound, never-listening TCP socket on 127.0.0.1 and its port: connections to it
    are refused at once for as long as the socket is kept open (close it when done)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@dataclass
class GalleryImage:
    rel: str  # path relative to the root, with '/'
    format: str  # PNG or JPEG
    width: int
    height: int
    captured_at: dt.datetime | None
    caption: str | None = None


@dataclass
class IndexedLibrary:
    root: str
    data_dir: str
    settings: object
    images: list[GalleryImage]
    service: object
    ids: dict[str, int] = field(default_factory=dict)  # rel path -> item id

    def matching(self, pred) -> list[int]:
        return sorted(self.ids[g.rel] for g in self.images if pred(g))



def wipe_postgres(url: str) -> None:
    """Drop every table in the database's current schema, whatever migration made it.

    Tests share one PostgreSQL database; a list of table names goes stale as soon as a
    migration adds a table, and a table left behind breaks the next test's upgrade."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        with eng.begin() as c:
            names = c.execute(text("SELECT tablename FROM pg_tables "
                                   "WHERE schemaname = current_schema()")).scalars().all()
            for name in names:
                c.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        eng.dispose()

def _pattern(i: int, w: int, h: int) -> Image.Image:
    """Coloured patterns that differ per index: stripes, checks, gradients, blocks."""
    rng = np.random.default_rng(1000 + i)
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    kind = i % 4
    if kind == 0:
        mask = (xx // max(2, 3 + i % 7)) % 2
    elif kind == 1:
        mask = ((xx // 6) + (yy // 6)) % 2
    elif kind == 2:
        mask = xx / max(1, w - 1)
    else:
        mask = rng.random((h, w)) > 0.5
    other = 255 - base
    arr = base[None, None, :] * (1 - np.asarray(mask, np.float32)[..., None]) \
        + other[None, None, :] * np.asarray(mask, np.float32)[..., None]
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def write_gallery(root: str, n: int = 60) -> list[GalleryImage]:
    """``n`` images under ``root``: JPEGs (EXIF date + camera on most) and PNGs, varied sizes."""
    images = []
    for i in range(n):
        folder = FOLDERS[i % len(FOLDERS)]
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        w, h = 40 + (i * 7) % 120, 36 + (i * 11) % 90
        img = _pattern(i, w, h)
        name = f"img{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        rel = f"{folder}/{name}"
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        when = None
        if fmt == "JPEG":
            exif = Image.Exif()
            if i % 6 != 0:  # a few JPEGs stay undated
                when = dt.datetime(2020, 1, 1, 12, 0, 0) + dt.timedelta(days=9 * i)
                exif[0x0132] = when.strftime("%Y:%m:%d %H:%M:%S")
                exif[0x010F] = "TestCam"
                exif[0x0110] = f"TestCam Model {i % 3}"
            img.save(path, "JPEG", quality=90, exif=exif.tobytes())
        else:
            img.save(path, "PNG")
        caption = None
        if i in (1, 2, 3):
            caption = f"caption of image {i}: {CORPUS[i]}"
            with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
                f.write(caption)
        images.append(GalleryImage(rel, fmt, w, h, when, caption))
    return images


def build_settings(data_dir: str, **overrides):
    from search.config import Settings

    base = dict(data_dir=data_dir, model=TINY_MODEL, pretrained="none", device="cpu",
                workers=0, batch_size=16, api_keys=(API_KEY,), rate_limit=0, file_rate_limit=0,
                auth_failure_limit=0,
                torch_threads=None)
    base.update(overrides)
    return Settings(**base).resolved()


def index_folder(settings, encoder, root: str):
    """Index ``root`` into ``settings.data_dir``; returns a loaded SearchService."""
    from search.ingest.job import IndexJob
    from search.library import Library
    from search.service import SearchService

    library = Library(settings)
    IndexJob(library, encoder, settings).run([root])
    library.load()
    return SearchService(library, encoder, max_pixels=settings.max_pixels)


def item_ids(service, root: str) -> dict[str, int]:
    from sqlalchemy import select

    from search.store import MediaItem

    with service.library.store.session() as s:
        rows = s.execute(select(MediaItem.id, MediaItem.path)).all()
    return {os.path.relpath(p, root).replace(os.sep, "/"): i for i, p in rows}


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return TINY_MODEL


@pytest.fixture(scope="session")
def encoder():
    from search.encoder import load_encoder

    return load_encoder(build_settings(os.path.join(TESTS, "unused")))


@pytest.fixture(scope="session")
def make_settings():
    return build_settings


@pytest.fixture(scope="session")
def indexed_library(tmp_path_factory, encoder) -> IndexedLibrary:
    from search.corpus import add_texts

    base = tmp_path_factory.mktemp("indexed")
    root = os.path.realpath(str(base / "library"))
    images = write_gallery(root)
    settings = build_settings(str(base / "data"), library_roots=(root,))
    service = index_folder(settings, encoder, root)
    add_texts(service.library, encoder, [(t, "corpus") for t in CORPUS])
    lib = IndexedLibrary(root, settings.data_dir, settings, images, service)
    lib.ids = item_ids(service, root)
    assert len(lib.ids) == len(images)
    return lib


@pytest.fixture(scope="session")
def make_app(indexed_library):
    """Build an app over the shared library with settings overridden (same loaded service)."""
    from web import create_app

    def make(**overrides):
        settings = dataclasses.replace(indexed_library.settings, **overrides)
        return create_app(settings, service=indexed_library.service)
    return make


@pytest.fixture(scope="session")
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict:
    return dict(AUTH)


@pytest.fixture
def writable_library(tmp_path, encoder) -> IndexedLibrary:
    root = os.path.realpath(str(tmp_path / "library"))
    images = write_gallery(root, n=12)
    settings = build_settings(str(tmp_path / "data"), library_roots=(root,))
    service = index_folder(settings, encoder, root)
    lib = IndexedLibrary(root, settings.data_dir, settings, images, service)
    lib.ids = item_ids(service, root)
    yield lib
    service.library.close()


@pytest.fixture(scope="session")
def live_server(app):
    """Base URL of ``app`` served by werkzeug's threaded server on 127.0.0.1."""
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(10)
