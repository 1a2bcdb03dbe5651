"""The JSON API against a real index of generated images (Flask test client), and
``clipsearch serve`` as a real subprocess."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import API_KEY, AUTH, CORPUS


def _ids(resp) -> list[int]:
    assert resp.status_code == 200, resp.get_json()
    return [r["id"] for r in resp.get_json()["results"]]


def _file_bytes(lib, rel: str) -> bytes:
    with open(os.path.join(lib.root, *rel.split("/")), "rb") as f:
        return f.read()


# -- health, openapi, metrics -----------------------------------------------------
def test_health_reports_counts_and_model(client, indexed_library):
    body = client.get("/api/health").get_json()
    assert body["status"] == "ok"
    assert body["images"] == len(indexed_library.images)
    assert body["texts"] == len(CORPUS) + 3  # corpus + three sidecar captions
    assert body["model"]["name"] == "tiny-clip" and body["model"]["dim"] == 32
    assert body["index"]["images"]["vectors"] == len(indexed_library.images)


def test_metrics_expose_latency_stages_and_index_size(client):
    client.get("/api/search?q=red")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'clipsearch_http_request_duration_seconds_count{method="GET",route="/api/search"' in text
    assert 'clipsearch_search_stage_seconds_count{stage="encode"}' in text
    assert 'clipsearch_index_vectors{table="images"} 60.0' in text


def test_openapi_document_is_served(client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert "/api/search" in doc["paths"] and "/api/items/{item_id}/file" in doc["paths"]


# -- text search -----------------------------------------------------------------------
def test_text_search_returns_items_with_relative_paths(client, indexed_library):
    resp = client.get("/api/search?q=a+red+square&k=5")
    body = resp.get_json()
    assert resp.status_code == 200 and len(body["results"]) == 5 and body["has_more"]
    assert set(body["timings_ms"]) >= {"encode", "search", "fetch", "total"}
    assert "encode;dur=" in resp.headers["Server-Timing"]
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    by_rel = {g.rel: g for g in indexed_library.images}
    for r in body["results"]:
        assert not r["path"].startswith("/") and indexed_library.root not in json.dumps(r)
        g = by_rel[r["path"]]
        assert r["name"] == g.rel.rsplit("/", 1)[1]
        assert (r["width"], r["height"], r["format"]) == (g.width, g.height, g.format)
        assert r["thumbnail_url"] == f"/api/items/{r['id']}/thumbnail"
        assert r["file_url"] == f"/api/items/{r['id']}/file"


def test_text_search_matches_the_service_directly(client, indexed_library):
    direct = indexed_library.service.text_to_images("blue stripes", k=10)
    assert _ids(client.get("/api/search?q=blue%20stripes&k=10")) == [h.id for h in direct.hits]


def test_pagination_has_no_repeats_or_gaps(client, indexed_library):
    whole = _ids(client.get("/api/search?q=green&k=60"))
    assert len(whole) == 60
    seen, offset, pages = [], 0, 0
    while True:
        body = client.get(f"/api/search?q=green&k=7&offset={offset}").get_json()
        seen += [r["id"] for r in body["results"]]
        pages += 1
        offset += 7
        if not body["has_more"]:
            break
    assert seen == whole and pages == 9


@pytest.mark.parametrize("query, pred", [
    ("format=JPEG", lambda g: g.format == "JPEG"),
    ("format=png", lambda g: g.format == "PNG"),
    ("path_prefix=cool/", lambda g: g.rel.startswith("cool/")),
    ("path_prefix=mixed", lambda g: g.rel.startswith("mixed/")),
    ("min_width=100", lambda g: g.width >= 100),
    ("min_width=60&min_height=80", lambda g: g.width >= 60 and g.height >= 80),
    ("captured_after=2020-06-01", lambda g: g.captured_at is not None
     and g.captured_at.date().isoformat() >= "2020-06-01"),
    ("captured_before=2020-06-01", lambda g: g.captured_at is not None
     and g.captured_at.date().isoformat() <= "2020-06-01"),
    ("captured_after=2020-03-01&captured_before=2020-09-30T23:00:00&format=jpg",
     lambda g: g.captured_at is not None and "2020-03-01" <= g.captured_at.date().isoformat()
     <= "2020-09-30"),
])
def test_filters_return_exactly_k_when_k_match(client, indexed_library, query, pred):
    matching = set(indexed_library.matching(pred))
    assert len(matching) >= 4, "the gallery should give each filter several matches"
    k = len(matching) - 1
    got = _ids(client.get(f"/api/search?q=something&k={k}&{query}"))
    assert len(got) == k and set(got) <= matching
    everything = _ids(client.get(f"/api/search?q=something&k=100&{query}"))
    assert set(everything) == matching


def test_format_filter_repeated_parameter(client, indexed_library):
    got = _ids(client.get("/api/search?q=x&k=100&format=PNG&format=JPEG"))
    assert len(got) == 60


def test_threshold_drops_low_scores(client):
    body = client.get("/api/search?q=red&k=60").get_json()
    cut = body["results"][10]["score"]
    got = client.get(f"/api/search?q=red&k=60&threshold={cut}").get_json()["results"]
    assert all(r["score"] >= cut for r in got) and 11 <= len(got) < 60


def test_sort_by_date_newest_first_undated_last(client):
    results = client.get("/api/search?q=x&k=60&sort=date").get_json()["results"]
    dates = [r["captured_at"] for r in results]
    dated = [d for d in dates if d is not None]
    assert dated == sorted(dated, reverse=True)
    assert dates == dated + [None] * (len(dates) - len(dated))
    page2 = client.get("/api/search?q=x&k=10&offset=10&sort=date").get_json()["results"]
    assert [r["id"] for r in page2] == [r["id"] for r in results[10:20]]


# -- image search ------------------------------------------------------------------------
def test_uploaded_image_finds_itself_first(client, indexed_library):
    rel = indexed_library.images[4].rel
    resp = client.post("/api/search/image?k=3", data={
        "image": (io.BytesIO(_file_bytes(indexed_library, rel)), "query.jpg")},
        content_type="multipart/form-data")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["results"][0]["id"] == indexed_library.ids[rel]
    assert body["results"][0]["score"] > 0.999


def test_image_search_takes_options_from_form_fields(client, indexed_library):
    rel = indexed_library.images[4].rel  # a JPEG
    resp = client.post("/api/search/image", data={
        "image": (io.BytesIO(_file_bytes(indexed_library, rel)), "q.jpg"), "k": "4",
        "format": "PNG"}, content_type="multipart/form-data")
    results = resp.get_json()["results"]
    assert len(results) == 4 and all(r["format"] == "PNG" for r in results)


def test_image_search_by_item_id_json(client, indexed_library):
    item = indexed_library.ids[indexed_library.images[7].rel]
    body = client.post("/api/search/image", json={"item_id": item, "k": 2}).get_json()
    assert body["results"][0]["id"] == item
    nested = client.post("/api/search/image", json={
        "item_id": item, "k": 5, "path_prefix": "warm/"}).get_json()
    assert all(r["path"].startswith("warm/") for r in nested["results"])
    assert len(nested["results"]) == 5


def test_similar_excludes_the_item_itself(client, indexed_library):
    item = indexed_library.ids[indexed_library.images[9].rel]
    got = _ids(client.get(f"/api/items/{item}/similar?k=59"))
    assert item not in got and len(got) == 59
    direct = client.post("/api/search/image", json={"item_id": item, "k": 60}).get_json()
    assert got == [r["id"] for r in direct["results"] if r["id"] != item][:59]


def test_image_to_texts(client, indexed_library):
    item = indexed_library.ids[indexed_library.images[2].rel]
    body = client.post("/api/search/texts", json={"item_id": item, "k": 30}).get_json()
    texts = body["results"]
    assert len(texts) == len(CORPUS) + 3
    assert {t["text"] for t in texts} >= set(CORPUS)
    sidecars = [t for t in texts if t["source"].startswith("sidecar:")]
    assert len(sidecars) == 3
    for t in sidecars:
        assert t["source"] == "sidecar:" + next(
            g.rel for g in indexed_library.images if indexed_library.ids[g.rel] == t["item_id"])
    upload = client.post("/api/search/texts?k=3", data={
        "image": (io.BytesIO(_file_bytes(indexed_library, indexed_library.images[2].rel)),
                  "x.png")}, content_type="multipart/form-data").get_json()
    assert [t["id"] for t in upload["results"]] == [t["id"] for t in texts[:3]]


# -- combined query -------------------------------------------------------------------------
def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_combined_query_equals_its_vector(client, indexed_library, encoder):
    item = indexed_library.ids[indexed_library.images[5].rel]
    terms = [{"text": "beach"}, {"item_id": item, "weight": 0.5},
             {"text": "people", "weight": -1}]
    body = client.post("/api/search", json={"terms": terms, "k": 12}).get_json()
    beach, people = encoder.encode_texts(["beach", "people"])
    item_vec = indexed_library.service.item_vector(item)
    vec = _unit(beach + 0.5 * item_vec - people)
    raw = client.post("/api/search", json={"terms": [{"vector": vec.tolist()}], "k": 12})
    assert _ids(raw) == [r["id"] for r in body["results"]]
    assert len(body["results"]) == 12


def test_combined_query_with_uploaded_image_and_filters(client, indexed_library):
    rel = indexed_library.images[10].rel
    query = {"terms": [{"image": "photo"}, {"text": "red", "weight": 0.1}], "k": 5,
             "filters": {"format": "JPEG", "path_prefix": rel.split("/")[0] + "/"}}
    resp = client.post("/api/search", data={
        "query": json.dumps(query),
        "photo": (io.BytesIO(_file_bytes(indexed_library, rel)), "p.jpg")},
        content_type="multipart/form-data")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["results"][0]["id"] == indexed_library.ids[rel]
    assert all(r["format"] == "JPEG" and r["path"].startswith(rel.split("/")[0])
               for r in body["results"])


def test_combined_query_targets_texts(client):
    body = client.post("/api/search", json={
        "terms": [{"text": "a photo of a cat"}], "target": "texts", "k": 1}).get_json()
    assert body["results"][0]["text"] == "a photo of a cat"
    assert body["results"][0]["score"] > 0.999


@pytest.mark.parametrize("body, message", [
    ({"terms": []}, "terms"),
    ({"terms": [{"text": "a", "item_id": 1}]}, "exactly one"),
    ({"terms": [{"image": "x"}]}, "multipart"),
    ({"terms": [{"vector": [1, 2]}]}, "numbers"),
    ({"terms": [{"vector": ["1"] * 32}]}, "numbers"),
    ({"terms": [{"text": "a"}], "filters": {"colour": "red"}}, "unknown"),
    ({"terms": [{"text": "a"}], "target": "files"}, "target"),
    ({"terms": [{"text": "a"}], "k": 0}, "k must"),
    ({"terms": [{"text": "a"}], "sort": "date", "target": "texts"}, "sort"),
    ({"terms": [{"item_id": 99999}]}, "no item"),
])
def test_combined_query_errors(client, body, message):
    resp = client.post("/api/search", json=body)
    assert resp.status_code in (400, 404), resp.get_json()
    assert message in resp.get_json()["error"]


# -- items -------------------------------------------------------------------------------------
def test_item_detail_has_metadata_and_nearest_texts(client, indexed_library):
    g = indexed_library.images[8]  # a dated JPEG
    item = indexed_library.ids[g.rel]
    body = client.get(f"/api/items/{item}").get_json()
    assert body["id"] == item and body["path"] == g.rel
    assert body["captured_at"] == g.captured_at.isoformat()
    assert body["camera"] == "TestCam Model 2"
    assert len(body["texts"]) == 5 and all("score" in t for t in body["texts"])


def test_file_is_the_original_bytes(client, indexed_library):
    g = indexed_library.images[3]
    resp = client.get(f"/api/items/{indexed_library.ids[g.rel]}/file")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.data == _file_bytes(indexed_library, g.rel)
    again = client.get(f"/api/items/{indexed_library.ids[g.rel]}/file",
                       headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304


def test_thumbnail_is_a_cached_resized_jpeg(client, indexed_library):
    from PIL import Image

    g = max(indexed_library.images, key=lambda g: g.width)
    url = f"/api/items/{indexed_library.ids[g.rel]}/thumbnail?size=64"
    resp = client.get(url)
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert "max-age" in resp.headers["Cache-Control"] and resp.headers["ETag"]
    img = Image.open(io.BytesIO(resp.data))
    assert max(img.size) == 64
    cached = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(
        indexed_library.data_dir, "cache", "thumbs")) for f in fs]
    assert any(os.path.basename(p).startswith(f"{indexed_library.ids[g.rel]}-64-")
               for p in cached)
    assert client.get(url, headers={"If-None-Match": resp.headers["ETag"]}).status_code == 304
    assert client.get(url).data == resp.data


def test_unknown_item_is_404_json(client):
    for url in ("/api/items/999999", "/api/items/999999/file", "/api/items/999999/thumbnail",
                "/api/items/999999/similar"):
        resp = client.get(url)
        assert resp.status_code == 404 and "error" in resp.get_json()


# -- writes (their own library) -----------------------------------------------------------------
@pytest.fixture
def wclient(writable_library):
    from web import create_app

    app = create_app(writable_library.settings, service=writable_library.service)
    yield app.test_client()
    app.extensions["clipsearch"].jobs.wait(30)


def test_delete_item_removes_it_from_search(wclient, writable_library):
    item = writable_library.ids[writable_library.images[0].rel]
    assert item in _ids(wclient.get("/api/search?q=x&k=12"))
    assert wclient.delete(f"/api/items/{item}").status_code == 401
    resp = wclient.delete(f"/api/items/{item}", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json() == {"deleted": item}
    assert item not in _ids(wclient.get("/api/search?q=x&k=12"))
    assert wclient.get(f"/api/items/{item}").status_code == 404
    assert wclient.delete(f"/api/items/{item}", headers=AUTH).status_code == 404
    assert os.path.exists(os.path.join(writable_library.root, writable_library.images[0].rel))


def test_texts_add_and_remove(wclient):
    resp = wclient.post("/api/texts", json={"texts": ["zebra crossing", "zebra crossing",
                                                      "lighthouse"], "source": "mine"},
                        headers=AUTH)
    assert resp.status_code == 201 and resp.get_json()["added"] == 2
    again = wclient.post("/api/texts", json={"texts": ["lighthouse"], "source": "mine"},
                         headers=AUTH).get_json()
    assert again == {"added": 0, "duplicates": 1, "source": "mine"}
    found = wclient.post("/api/search", json={"terms": [{"text": "lighthouse"}],
                                              "target": "texts", "k": 1}).get_json()
    assert found["results"][0]["text"] == "lighthouse" and found["results"][0]["source"] == "mine"
    gone = wclient.delete("/api/texts?source=mine", headers=AUTH)
    assert gone.get_json() == {"deleted": 2, "source": "mine"}
    left = wclient.post("/api/search", json={"terms": [{"text": "lighthouse"}],
                                             "target": "texts", "k": 5}).get_json()
    assert all(t["source"] != "mine" for t in left["results"])


def test_index_job_runs_and_reports_progress(wclient, writable_library):
    from conftest import write_gallery

    new_root = os.path.join(writable_library.root, "new")
    write_gallery(new_root, n=5)
    resp = wclient.post("/api/index", json={"root": new_root}, headers=AUTH)
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["job_id"]
    assert resp.headers["Location"] == f"/api/jobs/{job_id}"
    wclient.application.extensions["clipsearch"].jobs.wait(60)
    job = wclient.get(f"/api/jobs/{job_id}", headers=AUTH).get_json()
    assert job["state"] == "done", job
    assert job["summary"]["added"] == 5 and job["roots"] == [new_root]
    assert wclient.get(f"/api/jobs/{job_id}").status_code == 401
    hits = wclient.get("/api/search?q=x&k=50&path_prefix=warm/").get_json()["results"]
    # Items of the new root are relative to it; both roots now hold a warm/ folder.
    assert len(hits) == len([g for g in writable_library.images if g.rel.startswith("warm/")]) + 2
    assert wclient.get("/api/health").get_json()["images"] == 12 + 5


def test_index_refuses_roots_outside_the_configured_ones(wclient, writable_library, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for root in (str(outside), "/", os.path.join(writable_library.root, "..")):
        resp = wclient.post("/api/index", json={"root": root}, headers=AUTH)
        assert resp.status_code == 403, (root, resp.get_json())
    assert wclient.post("/api/index", json={"root": "relative/path"},
                        headers=AUTH).status_code == 400
    assert wclient.post("/api/index", json={"root": os.path.join(writable_library.root, "nope")},
                        headers=AUTH).status_code == 404
    assert wclient.get("/api/jobs/12345", headers=AUTH).status_code == 404


# -- the real server ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def test_clipsearch_serve_subprocess(indexed_library):
    port = _free_port()
    env = {**os.environ, "CLIPSEARCH_DATA_DIR": indexed_library.data_dir,
           "CLIPSEARCH_MODEL": indexed_library.settings.model, "CLIPSEARCH_PRETRAINED": "none",
           "CLIPSEARCH_API_KEYS": API_KEY, "CLIPSEARCH_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "serve", "--port", str(port), "--threads", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read().decode(errors="replace"))
                time.sleep(0.3)
        assert status == 200 and body["images"] == len(indexed_library.images)
        status, page = _get(f"http://127.0.0.1:{port}/api/search?q=red&k=3")
        assert status == 200 and len(page["results"]) == 3
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")
    log = out.decode(errors="replace")
    assert "Booting worker" in log and "Traceback" not in log
    assert "q=red" not in log  # the access log leaves query strings out


def test_serving_module_leaves_prometheus_unimported():
    # The gunicorn master must not import prometheus_client before `serve` picks its
    # multiprocess mode, or the workers' metrics would never reach /metrics.
    code = "import sys, web.serving; assert 'prometheus_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
