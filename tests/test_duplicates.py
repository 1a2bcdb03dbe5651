"""Near-duplicates with the bundled clipsearch-mini (a model that means something): library
groups of generated copies (re-encoded, resized, cropped, EXIF-stripped, identical) with the
suggested keeper, "not duplicates" decisions that survive a re-index, folding at query time
that keeps k, and the same over REST and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import AUTH, build_settings, item_ids
from dupgen import write_library

from search.duplicates import (find_duplicates, forget_decisions, mark_not_duplicates,
                               near_pairs)
from search.errors import BadRequest, NotFound
from search.ingest.job import IndexJob
from search.library import Library
from search.options import parse_options, run_search
from search.service import SearchService, Term

#: measured with clipsearch-mini (bench/bench_duplicates.py, 400 pictures + 200 copies):
#: re-encoded, resized and stripped copies lie within 0.0053 of their original, 3 % crops
#: within 0.088, the nearest distinct pictures 0.07 apart and more (0.08: precision 0.99,
#: recall 0.99; 0.1: 0.95, 1.0). Among these 30 pictures nothing distinct is that close, so
#: 0.1 groups exactly the copies; Immich's 0.01 (for ViT-B-32) misses the crop
T = 0.1
COPIES = {0: "reencoded", 1: "resized", 2: "cropped", 3: "stripped", 4: "identical"}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    base = tmp_path_factory.mktemp("dups")
    root = os.path.realpath(str(base / "library"))
    write_library(root, distinct=30, copies=COPIES)
    settings = build_settings(str(base / "data"), model="clipsearch-mini", pretrained=None,
                              library_roots=(root,))
    from search.encoder import load_encoder
    encoder = load_encoder(settings)
    library = Library(settings)
    IndexJob(library, encoder, settings).run([root])
    library.load()
    service = SearchService(library, encoder, max_pixels=settings.max_pixels)
    yield root, settings, encoder, service, item_ids(service, root)
    library.close()


def _groups(store, threshold=T):
    return {frozenset(os.path.basename(i["path"]) for i in g.items): g
            for g in find_duplicates(store, threshold).groups}


def _expected():
    return {frozenset({f"p{n:05d}.jpg", f"p{n:05d}-{kind}.jpg"}) for n, kind in COPIES.items()}


def test_copies_are_grouped_with_their_original_and_a_keeper(lib):
    service = lib[3]
    groups = _groups(service.library.store)
    assert set(groups) == _expected()
    for names, g in groups.items():
        kind = "identical" if any("identical" in n for n in names) else "near"
        assert g.kind == kind
        keeper = next(i for i in g.items if i["id"] == g.keeper)
        copy = next(i for i in g.items if i["id"] != g.keeper)
        if any("resized" in n or "cropped" in n for n in names):  # most pixels wins
            assert keeper["path"].endswith("p00001.jpg") or keeper["path"].endswith(
                "p00002.jpg")
        elif any("reencoded" in n for n in names):  # same pixels: the larger file
            assert keeper["size"] > copy["size"] and keeper["path"].endswith("p00000.jpg")
        elif any("stripped" in n for n in names):  # same pixels: the one with its EXIF
            assert keeper["camera"] == "TestCam One" and copy["camera"] is None
        else:  # identical: the older item
            assert keeper["id"] < copy["id"]
        assert g.items[0]["id"] == g.keeper and copy["distance"] < T
    # Immich's 0.01 finds the copies this small model moves least, not the crop
    strict = _groups(service.library.store, 0.01)
    assert frozenset({"p00002.jpg", "p00002-cropped.jpg"}) not in strict
    assert frozenset({"p00004.jpg", "p00004-identical.jpg"}) in strict  # same bytes, any T


def test_not_duplicates_decisions_are_remembered_across_a_reindex(lib, tmp_path):
    root, settings, encoder, service, _ = lib
    ids = item_ids(service, root)  # an earlier test deletes and re-adds a file
    store = service.library.store
    pair = [ids["orig/p00000.jpg"], ids["copies/p00000-reencoded.jpg"]]
    assert mark_not_duplicates(store, pair) == 1
    assert set(_groups(store)) == _expected() - {frozenset({"p00000.jpg",
                                                            "p00000-reencoded.jpg"})}
    # re-embedding everything and a copy deleted and indexed again (new id): still apart
    IndexJob(service.library, encoder, settings, reembed=True).run([root])
    service.library.delete_items([pair[1]])
    summary = IndexJob(service.library, encoder, settings).run([root])
    assert summary.added == 1
    assert item_ids(service, root)["copies/p00000-reencoded.jpg"] != pair[1]
    assert frozenset({"p00000.jpg", "p00000-reencoded.jpg"}) not in _groups(store)
    new = [ids["orig/p00000.jpg"], item_ids(service, root)["copies/p00000-reencoded.jpg"]]
    assert forget_decisions(store, new) == 1
    assert set(_groups(store)) == _expected()
    with pytest.raises(BadRequest):  # identical copies cannot be "not duplicates"
        mark_not_duplicates(store, [ids["orig/p00004.jpg"], ids["copies/p00004-identical.jpg"]])
    with pytest.raises(NotFound):
        mark_not_duplicates(store, [ids["orig/p00004.jpg"], 10**9])


def _by_item(service, item_id, **opts):
    return run_search(service, "images", (Term(item_id=item_id),),
                      parse_options({"relevance": "off", **opts}))


def test_folding_keeps_k_and_lists_the_folded_hits(lib):
    root, settings, encoder, service, _ = lib
    ids = item_ids(service, root)  # an earlier test deletes and re-adds a file
    for n in range(5):  # the query picture and its copy are both hits without folding
        orig = ids[f"orig/p{n:05d}.jpg"]
        copy = ids[f"copies/p{n:05d}-{COPIES[n]}.jpg"]
        plain = _by_item(service, orig, k="6")
        assert copy in [h.id for h in plain.hits[:2]]
        folded = _by_item(service, orig, k="6", collapse="true", collapse_threshold=str(T))
        assert len(folded.hits) == 6 and folded.has_more
        top = folded.hits[0]
        # (an identical copy ties with the original at 1.0; the lower id ranks first)
        assert len(top.similar) == 1 and {top.id, top.similar[0]["id"]} == {orig, copy}
        assert top.to_dict()["similar_count"] == 1
        hit_ids = [h.id for h in folded.hits]
        assert top.similar[0]["id"] not in hit_ids and len(set(hit_ids)) == 6
        vecs = np.stack([service.item_vector(i) for i in hit_ids])
        sims = vecs @ vecs.T
        assert (sims[~np.eye(6, dtype=bool)] < 1 - T).all()  # no two kept hits fold
    # k stays k on every page, pages do not overlap, and the folded never come back
    pages = [_by_item(service, ids["orig/p00001.jpg"], k="7", offset=str(o), collapse="true",
                      collapse_threshold=str(T)) for o in (0, 7, 14, 21, 28)]
    seen = [h.id for p in pages for h in p.hits]
    assert [len(p.hits) for p in pages] == [7, 7, 7, 7, 2] and len(seen) == len(set(seen))
    assert [p.has_more for p in pages] == [True, True, True, True, False]
    folded_ids = {m["id"] for p in pages for h in p.hits for m in h.similar}
    assert len(seen) + len(folded_ids) == 35 and not folded_ids & set(seen)
    # text queries in every mode fold too
    for mode in ("vector", "hybrid", "keyword"):
        page = run_search(service, "images", (Term(text="p00003"),), parse_options(
            {"mode": mode, "relevance": "off", "k": "3", "collapse": "true",
             "collapse_threshold": str(T)}))
        assert len({h.id for h in page.hits}) == len(page.hits)
        assert len(page.hits) == 3
        if mode == "keyword":  # the name matches the original and its copy: one hit
            pair = {ids["orig/p00003.jpg"], ids["copies/p00003-stripped.jpg"]}
            top = page.hits[0]
            assert {top.id} | {m["id"] for m in top.similar} == pair
            assert not pair & {h.id for h in page.hits[1:]}


def test_keeper_order_pixels_then_size_then_metadata():
    from search.duplicates import keeper_key
    base = dict(width=100, height=100, size=1000, captured_at=None, camera=None, lens=None,
                description=None, keywords=None)
    rows = [dict(base, id=1), dict(base, id=2, camera="X"), dict(base, id=3, size=1001),
            dict(base, id=4, width=101)]
    assert [r["id"] for r in sorted(rows, key=keeper_key)] == [4, 3, 2, 1]


def test_near_pairs_with_ivf_find_what_the_exact_search_finds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3000, 64)).astype(np.float32)
    x = np.concatenate([centres, centres[:500] + rng.normal(0, 0.03, size=(500, 64))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    exact = {(i, j) for i, j, _ in near_pairs(x, 0.01)}
    approx = {(i, j) for i, j, _ in near_pairs(x, 0.01, exact_max=100)}
    assert len(exact) >= 450 and approx <= exact
    assert len(approx) >= 0.95 * len(exact)


def test_rest_duplicates_and_decisions(lib):
    from web import create_app
    root, settings, encoder, service, _ = lib
    ids = item_ids(service, root)  # an earlier test deletes and re-adds a file
    client = create_app(settings, service=service).test_client()
    body = client.get(f"/api/duplicates?threshold={T}").get_json()
    assert body["near_groups"] == 4 and body["identical_groups"] == 1
    g = body["groups"][0]
    assert g["items"][0]["id"] == g["keeper"] and "thumbnail_url" in g["items"][0]
    assert not g["items"][0]["path"].startswith("/")  # relative to its root
    assert client.get("/api/duplicates?threshold=2").status_code == 400
    assert client.get("/api/duplicates?threshold=x").status_code == 400
    assert client.get("/api/duplicates?bogus=1").status_code == 400
    pair = [ids["orig/p00001.jpg"], ids["copies/p00001-resized.jpg"]]
    url = "/api/duplicates/decisions"
    assert client.post(url, json={"item_ids": pair}).status_code == 401
    r = client.post(url, json={"item_ids": pair}, headers=AUTH)
    assert r.status_code == 200 and r.get_json() == {"pairs": 1, "not_duplicates": True}
    assert client.get(f"/api/duplicates?threshold={T}").get_json()["near_groups"] == 3
    r = client.post(url, json={"item_ids": pair, "not_duplicates": False}, headers=AUTH)
    assert r.get_json()["pairs"] == 1
    assert client.get(f"/api/duplicates?threshold={T}").get_json()["near_groups"] == 4
    for bad in ({"item_ids": [1]}, {"item_ids": "1,2"}, {"item_ids": [1, "2"]}, {"x": 1},
                {"item_ids": pair, "not_duplicates": "yes"}):
        r = client.post(url, json=bad, headers=AUTH)
        assert r.status_code == 400 and "error" in r.get_json(), bad
    assert client.post(url, json={"item_ids": [pair[0], 10**12]}, headers=AUTH).status_code == 404
    # collapse on the search routes
    r = client.get(f"/api/search?q=p00002&mode=keyword&collapse=true&collapse_threshold={T}")
    hits = r.get_json()["results"]
    assert hits[0]["similar_count"] == 1 and {hits[0]["path"], hits[0]["similar"][0]["path"]} \
        == {"orig/p00002.jpg", "copies/p00002-cropped.jpg"}
    assert all(h["similar_count"] == 0 for h in hits[1:])
    assert client.get("/api/search?q=x&collapse=maybe").status_code == 400
    r = client.post("/api/search", json={"terms": [{"text": "p00002"}], "mode": "keyword",
                                         "collapse": True, "collapse_threshold": T})
    assert r.status_code == 200 and r.get_json()["results"][0]["similar_count"] == 1
    r = client.post("/api/search", json={"terms": [{"text": "a"}], "collapse": "true"})
    assert r.status_code == 400  # JSON wants a boolean


def test_cli_duplicates(lib):
    settings = lib[1]
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=settings.data_dir, CLIPSEARCH_MODEL="clipsearch-mini",
               PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    env.pop("CLIPSEARCH_PRETRAINED", None)
    run = subprocess.run([sys.executable, "-m", "clipsearch", "duplicates", "--threshold", str(T),
                          "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert len(body["groups"]) == 5 and body["threshold"] == T
    text = subprocess.run([sys.executable, "-m", "clipsearch", "duplicates", "--threshold",
                           str(T)], env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "5 groups (1 identical, 4 near-identical" in text.stdout
    assert "keep" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "clipsearch", "duplicates", "--threshold", "9"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--threshold" in bad.stderr


def test_python_api_duplicates_and_collapse(lib):
    import search
    settings = lib[1]
    with search.open(settings.data_dir, model="clipsearch-mini", device="cpu") as c:
        body = c.duplicates(T)
        assert body["near_groups"] == 4 and body["identical_groups"] == 1
        page = c.search("p00001", mode="keyword", relevance="off", collapse=True,
                        collapse_threshold=T)
        assert page.hits[0].to_dict()["similar_count"] == 1
