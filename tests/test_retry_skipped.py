"""A skipped file gets another chance: ``--retry-skipped`` (CLI, Python API and REST) reads
skipped files again even when unchanged, and every summary counts the skipped files a
setting or package change might recover, naming the change.

The pixel limit is real (images over it), and so is HEIF (files written by pillow-heif);
"pillow-heif is not installed" is a subprocess in which importing it fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import AUTH, build_settings, require_module
from imagegen import make_library
from PIL import Image
from stores import db_url_for

from search.ingest.job import IndexJob
from search.library import Library

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
BIG = (400, 300)  # 120,000 pixels


@pytest.fixture
def photos(tmp_path):
    lib = make_library(str(tmp_path / "photos"), n_good=10, seed=31, with_bad=False)
    big = []
    for i in range(3):
        p = os.path.join(lib.root, "big", f"big{i}.png")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.new("RGB", BIG, (40 * i, 90, 200)).save(p)
        big.append(p)
    lib.big = big
    return lib


def by_reason(summary) -> dict:
    return {r["reason"]: r for r in summary.recoverable}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_raising_the_pixel_limit_then_retrying_indexes_the_skipped(kind, tmp_path, encoder,
                                                                   photos):
    url = db_url_for(kind, tmp_path)
    small = build_settings(str(tmp_path / "data"), max_pixels=100_000, db_url=url)
    library = Library(small)
    first = IndexJob(library, encoder, small).run([photos.root])
    assert first.added == 10 and first.skipped["too large"] == 3
    r = by_reason(first)["too large"]
    assert r["count"] == 3
    assert "CLIPSEARCH_MAX_PIXELS" in r["remedy"] and "120000" in r["remedy"]
    assert "--retry-skipped" in r["remedy"]
    library.close()

    larger = build_settings(str(tmp_path / "data"), max_pixels=200_000, db_url=url)
    library = Library(larger)
    plain = IndexJob(library, encoder, larger).run([photos.root])
    assert plain.unchanged == 13 and plain.recovered == 0  # unchanged skipped files stay
    assert by_reason(plain)["too large for an earlier limit"]["count"] == 3
    retry = IndexJob(library, encoder, larger, retry_skipped=True).run([photos.root])
    assert (retry.retried, retry.recovered, retry.unchanged) == (3, 3, 10)
    assert sum(retry.skipped.values()) == 0 and retry.recoverable == []
    states = library.store.file_states()
    assert all(st.status == "indexed" for st in states.values()) and len(states) == 13
    assert all(d.ok for d in library.check())
    again = IndexJob(library, encoder, larger, retry_skipped=True).run([photos.root])
    assert again.retried == 0 and again.unchanged == 13  # nothing skipped left to retry
    library.close()


def test_retry_keeps_files_that_still_fail(tmp_path, encoder, photos):
    settings = build_settings(str(tmp_path / "data"), max_pixels=100_000)
    library = Library(settings)
    IndexJob(library, encoder, settings).run([photos.root])
    retry = IndexJob(library, encoder, settings, retry_skipped=True).run([photos.root])
    assert retry.retried == 3 and retry.recovered == 0 and retry.skipped["too large"] == 3
    assert by_reason(retry)["too large"]["count"] == 3
    library.close()


def test_api_index_takes_retry_skipped(tmp_path, encoder, photos):
    from search.service import SearchService
    from web import create_app

    settings = build_settings(str(tmp_path / "data"), max_pixels=100_000,
                              library_roots=(photos.root,))
    library = Library(settings)
    IndexJob(library, encoder, settings).run([photos.root])
    library.close()
    settings = build_settings(str(tmp_path / "data"), max_pixels=200_000,
                              library_roots=(photos.root,))
    library = Library(settings).load()
    library.bind_model(encoder.identity)
    app = create_app(settings, service=SearchService(library, encoder, max_pixels=200_000))
    client = app.test_client()
    rt = app.extensions["clipsearch"]
    bad = client.post("/api/index", json={"root": photos.root, "retry_skipped": "yes"},
                      headers=AUTH)
    assert bad.status_code == 400 and "retry_skipped" in bad.get_json()["error"]
    r = client.post("/api/index", json={"root": photos.root, "retry_skipped": True}, headers=AUTH)
    assert r.status_code == 202, r.get_json()
    rt.jobs.wait(120)
    job = client.get(r.headers["Location"], headers=AUTH).get_json()
    assert job["state"] == "done", job
    assert job["summary"]["retried"] == 3 and job["summary"]["recovered"] == 3
    assert job["summary"]["recoverable"] == []
    library.close()


def heif_library(tmp_path) -> str:
    root = tmp_path / "heif"
    root.mkdir()
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.new("RGB", (64, 48), (0, 120, 0)).save(root / "phone.heic")
    Image.new("RGB", (64, 48), (120, 0, 0)).save(root / "renamed.jpg", format="HEIF")
    Image.new("RGB", (64, 48), (0, 0, 120)).save(root / "plain.png")
    return str(root)


NO_HEIF = ("import sys; sys.modules['pillow_heif'] = None\n"
           "from clipsearch.main import main\n"
           "sys.argv = ['clipsearch', *sys.argv[1:]]\n"
           "main()\n")


def test_heif_without_and_then_with_pillow_heif(tmp_path):
    require_module("pillow_heif", "pillow-heif", "pip install -e '.[heif]'")
    root = heif_library(tmp_path)
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=str(tmp_path / "data"), CLIPSEARCH_MODEL=TINY,
               CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="0",
               PYTHONPATH=os.pathsep.join(sys.path))

    def index(*args, heif=True):
        cmd = [sys.executable, "-m", "clipsearch"] if heif else [sys.executable, "-c", NO_HEIF]
        res = subprocess.run([*cmd, "-q", "index", root, "--no-progress", *args], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout

    out = index(heif=False)  # pillow-heif missing
    assert "added 1," in out and "skipped 1" in out
    assert "1 skipped file(s) might be recovered (HEIF/AVIF content): install pillow-heif" \
        in out
    assert "1 skipped file(s) might be recovered (HEIC/HEIF files not read): install " \
           "pillow-heif" in out and "the next run indexes them" in out
    out = index()  # installed now: the .heic file is new, the renamed one is unchanged
    assert "added 1," in out and "unchanged 2" in out
    assert "(HEIF/AVIF content): pillow-heif is installed now: run `clipsearch index " \
           "--retry-skipped`" in out
    out = index("--retry-skipped", "--json")
    summary = json.loads(out)
    assert summary["retried"] == 1 and summary["recovered"] == 1
    assert summary["skipped"] == 0 and summary["recoverable"] == []


def test_the_pixel_limit_can_be_raised_above_pillows_own(tmp_path):
    """Pillow refuses to open images over twice its MAX_IMAGE_PIXELS (179 MP) by default;
    CLIPSEARCH_MAX_PIXELS decides instead. A 196 MP PNG is refused as too large under a
    100 MP limit; under 250 MP it is opened and decoded at the model's size (libvips streams
    its rows), and a truncated copy fails as truncated, not as too large."""
    from imagegen import png_bomb

    from search.errors import ImageError
    from search.media.images import decode_image

    path = str(tmp_path / "huge.png")
    png_bomb(path, side=14_000)
    data = open(path, "rb").read()
    with pytest.raises(ImageError, match="too large.*196000000 pixels"):
        decode_image(data, max_pixels=100_000_000)
    # Under 250 MP it is opened. Reduced to the model's size (what the indexer asks) it
    # decodes in a stream of rows; a truncated copy fails as truncated, not as too large.
    assert max(decode_image(data, max_pixels=250_000_000, draft_size=224).image.size) >= 224
    with pytest.raises(ImageError) as err:
        decode_image(data[:len(data) // 2], max_pixels=250_000_000, draft_size=224)
    assert "too large" not in err.value.message and "truncated" in err.value.message
    # At full size it would need ~3.9 GB: the decoder memory bound refuses that instead
    with pytest.raises(ImageError, match="memory bound"):
        decode_image(data, max_pixels=250_000_000)
