"""Videos: indexed into moments, searched to the second, played from there.

Videos are generated here with PyAV from pictures the bundled model knows
(``tests/videogen.py``): a red circle for 0-4 s, a cat face for 4-9 s, a flag for 9-15 s,
as H.264/MP4 (display rotation 90 degrees, variable frame rate, AAC audio) and VP9/WebM
(Opus audio). Real components throughout: PyAV/FFmpeg, SQLite, FAISS, clipsearch-mini.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import API_KEY, build_settings, index_folder, require_module
from sqlalchemy import select

from search.ingest.job import IndexJob
from search.schema import MediaItem, Segment
from search.segments import moments_of
from search.service import SearchRequest, Term

videogen = require_module("videogen", "PyAV", "needs PyAV and the emoji font (see Makefile)")

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _settings(data_dir: str, root: str, **kw):
    return build_settings(data_dir, model="clipsearch-mini", pretrained=None,
                          library_roots=(root,), **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from search.encoder import load_encoder

    base = tmp_path_factory.mktemp("video")
    root = os.path.realpath(str(base / "library"))
    os.makedirs(os.path.join(root, "clips"))
    story = videogen.story()
    videogen.write_video(os.path.join(root, "clips", "story.mp4"), story, rotation=90,
                         vfr=True, audio=True, creation_time="2024-05-01T10:20:30.000000Z")
    videogen.write_video(os.path.join(root, "clips", "story.webm"), story, audio=True)
    videogen.write_video(os.path.join(root, "other.webm"), [
        (3.0, videogen.picture("glyph", name="dog face")),
        (3.0, videogen.picture("shape", shape="star", colour="yellow"))])
    videogen.write_audio_only(os.path.join(root, "audio.mp4"))
    open(os.path.join(root, "empty.mp4"), "wb").close()
    with open(os.path.join(root, "clips", "story.mp4"), "rb") as f:
        head = f.read(3000)
    with open(os.path.join(root, "corrupt.mp4"), "wb") as f:
        f.write(head)
    videogen.picture("glyph", name="cat face", seed=3).save(os.path.join(root, "cat.png"))
    settings = _settings(str(base / "data"), root)
    encoder = load_encoder(settings)
    service = index_folder(settings, encoder, root)
    return {"root": root, "settings": settings, "encoder": encoder, "service": service,
            "base": base}


def _items(service) -> dict[str, MediaItem]:
    with service.library.store.session() as s:
        return {os.path.basename(i.path): i for i in s.scalars(select(MediaItem))}


def _search(service, text: str, media: str = "all", k: int = 10, **kw):
    return service.search_images(SearchRequest((Term(text=text),), k=k, media=media, **kw))


def test_videos_are_items_with_their_facts(world):
    items = _items(world["service"])
    mp4, webm = items["story.mp4"], items["story.webm"]
    assert mp4.status == webm.status == "indexed"
    assert (mp4.media, mp4.format, mp4.codec, mp4.rotation) == ("video", "MP4", "h264", 90)
    assert (webm.format, webm.codec, webm.rotation) == ("WEBM", "vp9", 0)
    # stored sideways (240x320) with a 90-degree flag: shown, and reported, as 320x240
    assert (mp4.width, mp4.height) == (webm.width, webm.height) == (320, 240)
    assert abs(mp4.duration - 15.0) < 0.3 and abs(webm.duration - 15.0) < 0.3
    assert mp4.captured_at is not None and mp4.captured_at.isoformat() == "2024-05-01T10:20:30"
    assert mp4.vector is not None and len(mp4.vector) == 4 * world["encoder"].dim
    assert items["cat.png"].media == "image"
    st = world["service"].library.store.stats()
    assert (st["images_indexed"], st["videos_indexed"]) == (1, 3)


def test_bad_videos_are_skipped_with_their_reasons(world):
    items = _items(world["service"])
    assert items["audio.mp4"].status == "skipped"
    assert items["audio.mp4"].skip_reason.startswith("no video stream")
    assert items["empty.mp4"].skip_reason == "empty file"
    assert items["corrupt.mp4"].skip_reason.startswith("corrupt video")
    assert "/" not in items["corrupt.mp4"].skip_reason  # the reason, not the path again


def test_moments_cover_the_video_in_order(world):
    service = world["service"]
    for name in ("story.mp4", "story.webm"):
        item = _items(service)[name]
        moments = moments_of(service.library.store, item.id)
        assert len(moments) == 3, moments  # circle, cat, flag: two cuts
        assert moments[0]["t_start"] == 0.0
        assert abs(moments[-1]["t_end"] - item.duration) < 0.01
        for a, b in zip(moments, moments[1:]):
            assert a["t_end"] == b["t_start"]
        for m in moments:
            assert m["t_start"] <= m["t_rep"] <= m["t_end"]
        assert abs(moments[1]["t_start"] - 4) <= 1 and abs(moments[2]["t_start"] - 9) <= 1


def test_a_cat_finds_the_video_at_the_cat(world):
    page = _search(world["service"], "a cat", media="video")
    top = {os.path.basename(h.item["path"]): h for h in page.hits[:2]}
    assert set(top) == {"story.mp4", "story.webm"}, [h.item["path"] for h in page.hits]
    for hit in top.values():
        assert abs(hit.item["t_start"] - 4.0) <= 1.0, hit.item
        assert abs(hit.item["t_end"] - 9.0) <= 1.0
        assert round(hit.score, 6) == hit.item["moment"]["score"]
    circle = _search(world["service"], "a red circle", media="video").hits[0]
    assert circle.item["t_start"] == 0.0 and abs(circle.item["t_end"] - 4) <= 1
    star = _search(world["service"], "a yellow star", media="video").hits[0]
    assert os.path.basename(star.item["path"]) == "other.webm" and star.item["t_start"] >= 2


def test_media_selects_images_videos_or_both(world):
    service = world["service"]
    plain = dict(mode="vector", relevance="off")  # one ranking by score, nothing cut
    images = _search(service, "a cat", media="image", **plain).hits
    videos = _search(service, "a cat", media="video", **plain).hits
    both = _search(service, "a cat", media="all", **plain).hits
    assert {h.item["media"] for h in images} == {"image"}
    assert {h.item["media"] for h in videos} == {"video"}
    assert {h.id for h in both} == {h.id for h in images} | {h.id for h in videos}
    scores = [h.score for h in both]
    assert scores == sorted(scores, reverse=True)
    # paging the merged list: no repeats, no gaps
    pages = [_search(service, "a cat", k=1, offset=o, **plain).hits for o in range(len(both))]
    assert [p[0].id for p in pages] == [h.id for h in both]
    from search.schema import ItemFilter
    long_only = _search(service, "a cat", filters=ItemFilter(min_duration=10.0)).hits
    assert {os.path.basename(h.item["path"]) for h in long_only} == {"story.mp4", "story.webm"}


def test_a_moment_is_a_query(world):
    service = world["service"]
    mp4 = _items(service)["story.mp4"]
    cat = moments_of(service.library.store, mp4.id)[1]
    page = service.search_images(SearchRequest((Term(moment_id=cat["id"]),), k=5,
                                               exclude_ids=(mp4.id,), media="all"))
    names = [os.path.basename(h.item["path"]) for h in page.hits]
    assert names[0] in ("story.webm", "cat.png") and "story.mp4" not in names
    webm = next(h for h in page.hits if h.item["path"].endswith("story.webm"))
    assert abs(webm.item["t_start"] - 4) <= 1


def test_api_moments_thumbnails_and_chapters(world):
    from web import create_app

    app = create_app(world["settings"], service=world["service"])
    c = app.test_client()
    r = c.get("/api/search?q=a+cat&media=video&k=2", headers=AUTH)
    assert r.status_code == 200
    hit = r.get_json()["results"][0]
    assert hit["media"] == "video" and abs(hit["t_start"] - 4) <= 1
    assert hit["thumbnail_url"] == f"/api/items/{hit['id']}/thumbnail?t={hit['moment']['t_rep']:g}"
    assert hit["play_url"].startswith(f"/api/items/{hit['id']}/file#t=")
    r = c.get(f"/api/items/{hit['id']}/moments?t=6", headers=AUTH)
    body = r.get_json()
    assert r.status_code == 200 and len(body["moments"]) == 3
    assert body["at"]["id"] == hit["moment"]["id"]
    # a thumbnail at any second: red circle at 1 s, the yellow cat face at 6 s
    reds = []
    for t in (1, 6):
        r = c.get(f"/api/items/{hit['id']}/thumbnail?t={t}&size=64", headers=AUTH)
        assert r.status_code == 200 and r.mimetype == "image/jpeg"
        from io import BytesIO

        from PIL import Image
        img = np.asarray(Image.open(BytesIO(r.data)).convert("RGB"), dtype=float)
        h, w, _ = img.shape
        centre = img[h // 3: 2 * h // 3, w // 3: 2 * w // 3].reshape(-1, 3).mean(axis=0)
        reds.append(centre)
    assert reds[0][0] > 150 and reds[0][1] < 110  # red
    assert reds[1][0] > 150 and reds[1][1] > 110  # yellow-orange
    assert c.get(f"/api/items/{hit['id']}/thumbnail?t=abc", headers=AUTH).status_code == 400
    r = c.get(f"/api/moments/{hit['moment']['id']}/similar?k=3", headers=AUTH)
    assert r.status_code == 200 and hit["id"] not in [x["id"] for x in r.get_json()["results"]]
    assert c.get("/api/moments/999999/similar", headers=AUTH).status_code == 404
    r = c.post("/api/search", headers=AUTH, json={
        "terms": [{"moment_id": hit["moment"]["id"]}], "media": "video", "k": 3})
    assert r.status_code == 200 and r.get_json()["results"][0]["id"] == hit["id"]
    r = c.get("/api/search?q=cat&media=films", headers=AUTH)
    assert r.status_code == 400 and "media" in r.get_json()["error"]
    detail = c.get(f"/api/items/{hit['id']}", headers=AUTH).get_json()
    assert detail["media"] == "video" and len(detail["moments"]) == 3


def test_file_route_answers_range_requests(world):
    from web import create_app

    app = create_app(world["settings"], service=world["service"])
    c = app.test_client()
    item = _items(world["service"])["story.mp4"]
    with open(item.path, "rb") as f:
        raw = f.read()
    url = f"/api/items/{item.id}/file"
    full = c.get(url, headers=AUTH)
    assert full.status_code == 200 and full.data == raw and full.mimetype == "video/mp4"
    assert full.headers["Accept-Ranges"] == "bytes"
    r = c.get(url, headers={**AUTH, "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.data == raw[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(raw)}"
    r = c.get(url, headers={**AUTH, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.data == raw[-10:]
    r = c.get(url, headers={**AUTH, "Range": f"bytes={len(raw) - 5}-"})
    assert r.status_code == 206 and r.data == raw[-5:]
    r = c.get(url, headers={**AUTH, "Range": f"bytes={len(raw) + 10}-"})
    assert r.status_code == 416
    etag = full.headers["ETag"]
    assert c.get(url, headers={**AUTH, "If-None-Match": etag}).status_code == 304


def test_unchanged_moved_and_changed_videos(world, tmp_path):
    """Unchanged: a stat. Moved: same id, same moments and vectors. Changed: read again."""
    base = tmp_path
    root = os.path.realpath(str(base / "lib"))
    os.makedirs(root)
    src = os.path.join(world["root"], "clips", "story.webm")
    shutil.copy2(src, os.path.join(root, "a.webm"))
    shutil.copy2(os.path.join(world["root"], "other.webm"), os.path.join(root, "b.webm"))
    settings = _settings(str(base / "data"), root)
    service = index_folder(settings, world["encoder"], root)
    store = service.library.store

    def snapshot():
        with store.session() as s:
            return {(r.item_id, r.t_start, r.id, bytes(r.vector)) for r in s.scalars(select(Segment))}

    before = snapshot()
    first = _items(service)["a.webm"]
    again = IndexJob(service.library, world["encoder"], settings).run([root])
    assert again.unchanged == 2 and again.added == again.updated == 0
    os.makedirs(os.path.join(root, "sub"))
    os.rename(os.path.join(root, "a.webm"), os.path.join(root, "sub", "a.webm"))
    moved = IndexJob(service.library, world["encoder"], settings).run([root])
    assert moved.moved == 1 and moved.added == 0
    assert _items(service)["a.webm"].id == first.id
    assert snapshot() == before  # same segment rows, ids and vectors
    videogen.write_video(os.path.join(root, "b.webm"),
                         [(4.0, videogen.picture("glyph", name="cat face"))])
    changed = IndexJob(service.library, world["encoder"], settings).run([root])
    assert changed.updated == 1
    b = _items(service)["b.webm"]
    assert abs(b.duration - 4.0) < 0.3
    new = moments_of(store, b.id)
    assert len(new) == 1 and abs(new[0]["t_end"] - b.duration) < 0.01
    held = set(service.library.indexes["segments"].ids().tolist())
    with store.session() as s:
        stored = set(s.scalars(select(Segment.id)))
    assert held == stored  # old moments left the index, new ones joined it
    service.library.delete_items([b.id])
    assert set(service.library.indexes["segments"].ids().tolist()) == stored - {new[0]["id"]}
    with store.session() as s:
        assert not s.scalars(select(Segment).where(Segment.item_id == b.id)).all()


def test_media_video_without_videos_is_empty(world, tmp_path):
    root = os.path.realpath(str(tmp_path / "pics"))
    os.makedirs(root)
    videogen.picture("glyph", name="cat face").save(os.path.join(root, "cat.png"))
    service = index_folder(_settings(str(tmp_path / "data"), root), world["encoder"], root)
    assert _search(service, "a cat", media="video").hits == []
    assert len(_search(service, "a cat", media="all").hits) == 1


def test_limits_and_frameless_videos_are_skipped_with_reasons(world, tmp_path):
    """Duration and pixel limits come from the headers; a track without a single frame is
    skipped too (FFmpeg drops the empty track: 'no video stream')."""
    import av

    root = os.path.realpath(str(tmp_path / "lib"))
    os.makedirs(root)
    shutil.copy2(os.path.join(world["root"], "clips", "story.webm"), os.path.join(root, "a.webm"))
    out = av.open(os.path.join(root, "frameless.mp4"), "w")
    stream = out.add_stream("libx264", rate=12)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # a header, a video track, not one frame
    out.mux(list(stream.encode()))
    out.close()

    def reasons(**kw) -> dict[str, str]:
        data = str(tmp_path / f"data-{len(kw)}-{sorted(kw)}")
        settings = _settings(data, root, **kw)
        service = index_folder(settings, world["encoder"], root)
        return {n: i.skip_reason for n, i in _items(service).items()}

    got = reasons(video_max_seconds=10)
    assert got["a.webm"] == "too long: 15 s exceeds the limit of 10 s"
    assert got["frameless.mp4"].startswith(("no video stream", "zero length"))
    got = reasons(max_pixels=320 * 240 - 1)
    assert got["a.webm"].startswith("too large: 320x240")
