"""Library (store + index files) and SearchService over a real small index."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from imagegen import make_library
from PIL import Image

from search.config import Settings
from search.encoder import OpenClipEncoder
from search.errors import BadRequest, ModelMismatch, NotFound, UnsupportedMedia
from search.ingest.job import IndexJob
from search.library import Library
from search.service import SearchRequest, SearchService, Term
from search.store import ItemFilter

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")


@pytest.fixture(scope="module")
def enc():
    return OpenClipEncoder.load(TINY, "none", device="cpu")


@pytest.fixture(scope="module")
def built(tmp_path_factory, enc):
    base = tmp_path_factory.mktemp("lib")
    lib = make_library(str(base / "pics"), n_good=60, seed=11, with_bad=False)
    for p in lib.good[:6]:
        with open(os.path.splitext(p)[0] + ".txt", "w") as f:
            f.write(f"caption {os.path.basename(p)}")
    settings = Settings.from_env({}, data_dir=str(base / "data"), model=TINY, pretrained="none",
                                 workers=0, checkpoint_every=25)
    library = Library(settings)
    summary = IndexJob(library, enc, settings).run([lib.root])
    assert summary.added == 60 and summary.texts_added == 6
    return settings, library, lib


@pytest.fixture()
def service(built, enc):
    settings, library, _ = built
    return SearchService(library, enc, max_pixels=settings.max_pixels)


def fresh_library(settings) -> Library:
    return Library(settings)


def test_save_load_round_trip_and_meta(built):
    settings, library, _ = built
    other = fresh_library(settings).load()
    for table in ("images", "texts"):
        a, b = library.indexes[table], other.indexes[table]
        assert np.array_equal(a.ids(), b.ids())
    meta = json.load(open(library.index_path("images") + ".json"))
    assert "tiny-clip" in json.dumps(meta)
    assert all(d.ok for d in other.check())


def test_missing_index_file_is_rebuilt_from_the_store(built, tmp_path):
    settings, library, _ = built
    path = library.index_path("texts")
    os.rename(path, path + ".bak")
    try:
        lib2 = fresh_library(settings)
        diffs = {d.table: d for d in lib2.check()}
        assert diffs["texts"].problem == "index file missing"
        lib2.load()
        assert len(lib2.indexes["texts"]) == 6
        assert all(d.ok for d in lib2.check())
    finally:
        if os.path.exists(path + ".bak"):
            os.replace(path + ".bak", path)
            os.replace(path + ".bak.json", path + ".json") if os.path.exists(path + ".bak.json") else None
        fresh_library(settings).load()


def test_index_of_another_model_is_rebuilt(built):
    settings, library, _ = built
    meta_path = library.index_path("images") + ".json"
    meta = json.load(open(meta_path))
    forged = json.loads(json.dumps(meta).replace("tiny-clip", "other-model"))
    json.dump(forged, open(meta_path, "w"))
    lib2 = fresh_library(settings)
    d = {x.table: x for x in lib2.check()}["images"]
    assert not d.ok and d.problem
    lib2.load()
    assert all(x.ok for x in lib2.check())


def test_binding_another_model_is_refused(built):
    settings, library, _ = built
    other = OpenClipEncoder.load(TINY, "none")
    forged = type(other.identity)(name="tiny-clip", pretrained="sha256:abc", dim=32)
    with pytest.raises(ModelMismatch):
        library.bind_model(forged)


def test_text_query_pages_are_stable_without_repeats_or_gaps(service):
    full = service.search_images(SearchRequest((Term(text="a picture"),), k=60)).hits
    assert len(full) == 60
    seen = []
    offset = 0
    while True:
        page = service.search_images(SearchRequest((Term(text="a picture"),), k=7, offset=offset))
        seen += [h.id for h in page.hits]
        offset += 7
        if not page.has_more:
            break
    assert seen == [h.id for h in full]
    scores = [h.score for h in full]
    assert scores == sorted(scores, reverse=True)


def test_image_query_finds_the_image_itself(service, built):
    _, _, lib = built
    for path in lib.good[:5]:
        data = open(path, "rb").read()
        hit = service.image_to_images(data, k=1).hits[0]
        assert hit.item["path"] == path and hit.score == pytest.approx(1.0, abs=1e-4)


def test_similar_excludes_the_item(service):
    first = service.text_to_images("x", k=1).hits[0]
    sim = service.similar_items(first.id, k=10).hits
    assert len(sim) == 10 and first.id not in [h.id for h in sim]


def test_filters_return_exactly_k_when_k_match(service, built):
    _, library, lib = built
    prefix = os.path.join(lib.root, "album2") + os.sep
    matching = library.store.filter_ids(ItemFilter(path_prefixes=(prefix,)))
    assert len(matching) == 12
    page = service.search_images(SearchRequest((Term(text="q"),), k=12,
                                               filters=ItemFilter(path_prefixes=(prefix,))))
    assert len(page.hits) == 12 and all(h.item["path"].startswith(prefix) for h in page.hits)
    page = service.search_images(SearchRequest((Term(text="q"),), k=5,
                                               filters=ItemFilter(formats=("gif",))))
    assert len(page.hits) == 5 and {h.item["format"] for h in page.hits} == {"GIF"}
    none = service.search_images(SearchRequest((Term(text="q"),), k=5,
                                               filters=ItemFilter(min_width=10_000)))
    assert none.hits == [] and not none.has_more


def test_threshold_and_date_sort(service):
    all_hits = service.text_to_images("q", k=60).hits
    cut = all_hits[9].score
    page = service.search_images(SearchRequest((Term(text="q"),), k=60, threshold=cut))
    assert len(page.hits) >= 10 and all(h.score >= cut for h in page.hits)
    by_date = service.search_images(SearchRequest((Term(text="q"),), k=60, sort="date")).hits
    dates = [h.item["captured_at"] for h in by_date if h.item["captured_at"]]
    assert dates and dates == sorted(dates, reverse=True)
    assert all(h.item["captured_at"] is None for h in by_date[len(dates):])


def test_combined_query_is_the_normalised_weighted_sum(service, enc):
    first = service.text_to_images("beach", k=1).hits[0]
    terms = (Term(text="beach"), Term(item_id=first.id, weight=0.5), Term(text="people", weight=-1))
    q = service.query_vector(terms)
    t = enc.encode_texts(["beach", "people"])
    expect = t[0] + 0.5 * service.item_vector(first.id) - t[1]
    np.testing.assert_allclose(q, expect / np.linalg.norm(expect), atol=1e-5)
    vec = tuple(float(x) for x in q)
    a = service.search_images(SearchRequest(terms, k=5)).hits
    b = service.search_images(SearchRequest((Term(vector=vec),), k=5)).hits
    assert [h.id for h in a] == [h.id for h in b]


def test_image_to_texts(service, built):
    _, _, lib = built
    hits = service.image_to_texts(open(lib.good[0], "rb").read(), k=10).hits
    assert len(hits) == 6 and all("caption" in h.item["text"] for h in hits)


def test_terms_that_cancel_out_match_nothing(service, enc):
    """A query with no direction (terms that cancel, zero weights, zero vectors) is valid
    and answers an empty page, on images and texts alike."""
    dim = enc.dim
    for terms in ((Term(text="a"), Term(text="a", weight=-1)),
                  (Term(text="beach", weight=0),),
                  (Term(vector=(0.0,) * dim),),
                  (Term(vector=(-0.0,) * dim), Term(text="x", weight=0.0))):
        assert not service.query_vector(terms).any()
        for page in (service.search_images(SearchRequest(terms, k=5)),
                     service.search_texts(SearchRequest(terms, k=5))):
            assert page.hits == [] and page.has_more is False


def test_raw_vectors_of_any_finite_scale_have_a_direction(service, enc):
    """Huge and subnormal numbers neither overflow nor vanish: only the direction counts."""
    dim = enc.dim
    unit = np.zeros(dim)
    unit[0], unit[1] = 3.0, -4.0
    expect = service.query_vector((Term(vector=tuple(unit)),))
    np.testing.assert_allclose(expect[:2], [0.6, -0.8], atol=1e-6)
    for scale in (1e30, 1e-300, 5e-324):
        got = service.query_vector((Term(vector=tuple(unit * scale)),))
        assert np.isfinite(got).all()
        if (unit * scale).any():
            np.testing.assert_allclose(got, expect, atol=1e-6)


def test_bad_queries_are_bad_requests(service):
    with pytest.raises(BadRequest):
        service.search_images(SearchRequest((Term(vector=(1.0, 2.0)),)))
    with pytest.raises(BadRequest):
        SearchRequest((Term(text="a"),), k=0)
    with pytest.raises(BadRequest):
        Term(text="a", item_id=3)
    with pytest.raises(NotFound):
        service.similar_items(999_999)
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PNG")
    with pytest.raises(BadRequest):
        service.image_to_images(buf.getvalue()[:30])
    with pytest.raises(UnsupportedMedia):
        service.image_to_images(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")


def test_another_process_saving_is_picked_up(built, enc, tmp_path):
    """A long-running service sees an index saved by an indexing job elsewhere."""
    settings, library, lib = built
    svc = SearchService(fresh_library(settings).load(), enc, max_pixels=settings.max_pixels)
    before = len(svc.text_to_images("x", k=100).hits)
    extra = make_library(os.path.join(lib.root, "late"), n_good=3, seed=99, with_bad=False)
    IndexJob(library, enc, settings).run([lib.root])
    svc._last_reload_check = 0
    after = len(svc.text_to_images("x", k=100).hits)
    assert after == before + 3
    for p in extra.good:
        os.remove(p)
    IndexJob(library, enc, settings).run([lib.root])
