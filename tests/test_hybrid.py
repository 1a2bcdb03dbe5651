"""Words fused with vectors, through the real indexer and service (tiny model, so the vector
ranking means nothing and the words must carry the answer): an item reachable only by its
file name, only by its caption, only by an EXIF field comes first in hybrid and keyword
mode; filters, paging, date order and the cut-off work the same in every mode."""
from __future__ import annotations

import datetime as dt
import os

import pytest
from conftest import AUTH, build_settings, index_folder, item_ids, write_gallery
from PIL import Image

from search.errors import BadRequest
from search.options import parse_options, run_search
from search.service import Term


@pytest.fixture(scope="module")
def lib(tmp_path_factory, encoder):
    base = tmp_path_factory.mktemp("hybrid")
    root = os.path.realpath(str(base / "library"))
    write_gallery(root, n=30)
    special = os.path.join(root, "special")
    os.makedirs(special)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(os.path.join(special, "acme-invoice-2024.png"))
    Image.new("RGB", (40, 30), (10, 200, 10)).save(os.path.join(special, "img900.png"))
    with open(os.path.join(special, "img900.txt"), "w", encoding="utf-8") as f:
        f.write("zebra crossing at dusk")
    exif = Image.Exif()
    exif[0x010E] = "Lighthouse at Cabo da Roca"
    exif[0x9C9E] = "Portugal;coast".encode("utf-16-le") + b"\0\0"
    exif[0x0132] = "2031:05:01 10:00:00"
    exif.get_ifd(0x8769)[0xA434] = "Summilux 35"
    Image.new("RGB", (40, 30), (10, 10, 200)).save(os.path.join(special, "img901.jpg"), "JPEG",
                                                   exif=exif.tobytes())
    settings = build_settings(str(base / "data"), library_roots=(root,))
    service = index_folder(settings, encoder, root)
    yield service, item_ids(service, root)
    service.library.close()


def search(service, q, **opts):
    return run_search(service, "images", (Term(text=q),),
                      parse_options({k: str(v) for k, v in opts.items()}))


@pytest.mark.parametrize("query, rel", [
    ("acme invoice", "special/acme-invoice-2024.png"),        # file name only
    ("zebra crossing", "special/img900.png"),                  # caption only
    ("lighthouse", "special/img901.jpg"),                      # EXIF description only
    ("summilux", "special/img901.jpg"),                        # EXIF lens only
    ("portugal", "special/img901.jpg"),                        # EXIF keywords only
])
@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_an_item_reachable_only_by_its_words_comes_first(lib, query, rel, mode):
    service, ids = lib
    page = search(service, query, mode=mode, relevance="off", k=5)
    assert page.mode == mode
    assert page.hits[0].id == ids[rel]
    assert page.hits[0].matched
    if mode == "keyword":
        assert [h.id for h in page.hits] == [ids[rel]]


def test_hybrid_is_the_default_for_text_and_shows_matched_words(lib):
    service, ids = lib
    page = search(service, "acme invoice", relevance="off")
    assert page.mode == "hybrid"
    top = page.hits[0]
    assert top.matched == {"name": ["acme", "invoice"]}
    assert top.rank_score == pytest.approx(1 / 61 + 1 / (60 + _vector_rank(service, ids, top.id)))
    assert all(h.matched is None for h in page.hits[1:])
    assert search(service, "acme invoice", mode="vector").hits[0].matched is None


def _vector_rank(service, ids, item_id):
    page = search(service, "acme invoice", mode="vector", relevance="off", k=1000)
    return [h.id for h in page.hits].index(item_id) + 1


def test_quoted_phrase_matches_exactly(lib):
    service, ids = lib
    assert [h.id for h in search(service, '"zebra crossing"', mode="keyword").hits] == \
        [ids["special/img900.png"]]
    assert search(service, '"crossing zebra"', mode="keyword").hits == []


def test_filters_apply_to_words(lib):
    service, ids = lib
    assert search(service, "lighthouse", mode="keyword", path_prefix="special").hits
    assert search(service, "lighthouse", mode="keyword", path_prefix="warm").hits == []
    assert search(service, "lighthouse", mode="keyword", format="PNG").hits == []
    page = search(service, "lighthouse", path_prefix="warm", relevance="off", k=100)
    assert ids["special/img901.jpg"] not in [h.id for h in page.hits]


def test_word_modes_without_a_text_term_run_as_vector(lib):
    service, ids = lib
    query = (Term(item_id=ids["special/img900.png"]),)
    vector = run_search(service, "images", query, parse_options({"mode": "vector"}))
    for mode in ("keyword", "hybrid"):
        page = run_search(service, "images", query, parse_options({"mode": mode}))
        assert page.mode == "vector"  # what ran, not what was asked
        assert [h.id for h in page.hits] == [h.id for h in vector.hits]
    texts = run_search(service, "texts", (Term(text="lighthouse"),),
                       parse_options({"mode": "keyword"}))
    assert texts.mode == "vector"
    with pytest.raises(BadRequest):
        parse_options({"mode": "fuzzy"})
    page = run_search(service, "images", (Term(item_id=ids["special/img900.png"]),),
                      parse_options({}))
    assert page.mode == "vector"


def test_a_fixed_cut_keeps_word_matches_and_counts_the_rest(lib):
    service, ids = lib
    off = search(service, "zebra crossing", relevance="off", k=1000)
    page = search(service, "zebra crossing", relevance="0.999", k=1000)
    assert [h.id for h in page.hits] == [ids["special/img900.png"]]  # by its words
    assert page.relevance.applied and page.relevance.kept == 1
    assert page.relevance.cut == len(off.hits) - 1
    vec = search(service, "zebra crossing", mode="vector", relevance="0.999", k=1000)
    assert vec.hits == [] and vec.relevance.cut == len(ids)


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_date_order_is_the_n_most_relevant_newest_first_and_pages_cleanly(lib, mode):
    service, ids = lib
    n = 10
    best = [h.id for h in search(service, "red squares", mode=mode, relevance="off",
                                 k=n).hits]
    pages, offset = [], 0
    while True:
        page = search(service, "red squares", mode=mode, relevance="off", sort="date",
                      date_window=n, k=3, offset=offset)
        pages.append(page)
        offset += 3
        if not page.has_more:
            break
    listed = [h.id for p in pages for h in p.hits]
    assert len(ids) > n and len(listed) == n == len(set(listed))  # no repeat, no skip
    assert set(listed) == set(best)                                 # the n most relevant
    dates = [h.item["captured_at"] for p in pages for h in p.hits]
    dated = [d for d in dates if d is not None]
    assert dated == sorted(dated, reverse=True) and dates[:len(dated)] == dated
    assert search(service, "red squares", mode=mode, relevance="off", sort="date",
                  date_window=n, k=3, offset=n).hits == []
    with pytest.raises(BadRequest):
        parse_options({"date_window": "10001"})


def test_api_pages_say_mode_relevance_and_matched_words(client_for):
    resp = client_for.get("/api/search?q=zebra%20crossing&mode=keyword", headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["mode"] == "keyword"
    assert body["relevance"]["requested"] == "auto"
    assert body["results"][0]["matched"] == {"caption": ["zebra", "crossing"]}
    assert client_for.get("/api/search?q=x&mode=fuzzy", headers=AUTH).status_code == 400
    assert client_for.get("/api/search?q=x&relevance=2", headers=AUTH).status_code == 400
    resp = client_for.post("/api/search", headers=AUTH, json={
        "terms": [{"text": "lighthouse"}], "mode": "keyword", "relevance": "off"})
    assert resp.status_code == 200 and resp.get_json()["results"][0]["description"] == \
        "Lighthouse at Cabo da Roca"


@pytest.fixture
def client_for(lib, tmp_path):
    from web import create_app

    service, _ = lib
    return create_app(service.library.settings, service=service).test_client()


def test_dates_are_real(lib):
    service, ids = lib
    item = service.library.store.get_item(ids["special/img901.jpg"])
    assert item.captured_at == dt.datetime(2031, 5, 1, 10, 0)
    assert (item.lens, item.keywords) == ("Summilux 35", "Portugal; coast")
