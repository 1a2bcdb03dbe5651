"""The keyword index in the store, on SQLite (FTS5) and PostgreSQL (tsvector + GIN): the same
words give the same matches and ranking on both; deleting or renaming an item changes its
words in the item's own transaction."""
from __future__ import annotations

import types

import numpy as np
import pytest
from sqlalchemy import text, update

from conftest import PG_URL, require_postgres, wipe_postgres
from search import keywords
from search.ranking import word_ranking
from search.store import (STATUS_INDEXED, STATUS_SKIPPED, ItemFilter, MediaItem, Store,
                          TextEntry, pack, text_hash)
from search.words import parse_query


ITEMS = [  # (path below /lib, camera, lens, description, keywords, caption)
    ("invoices/acme-invoice-2024.png", None, None, None, None, None),
    ("invoices/acmeReceipt_march.jpg", None, None, None, None, "paid in full"),
    ("holiday/IMG_0001.jpg", "Canon EOS R5", "RF 24-70mm", "Sunset over the harbour",
     "boat; Lisbon", None),
    ("holiday/IMG_0002.jpg", "Canon EOS R5", None, None, None, "a red car near the harbour"),
    ("holiday/IMG_0003.jpg", None, None, None, None, "the car is red, the harbour is blue"),
    ("misc/dogs_on_beach.png", None, None, None, None, "two dogs running"),
    ("misc/dog.png", None, None, None, "pets", None),
    ("misc/skipped.png", None, None, None, None, None),
]
QUERIES = ["acme", "acme invoice", "invoices", "harbour", "red car", '"red car"', "dog",
           "canon lisbon", "boats", "paid", "2024", "receipt march", "nothing here",
           '"car red"', "pets dogs"]


def _pg_store() -> Store:
    require_postgres()
    wipe_postgres(PG_URL)
    return Store(PG_URL)


def _fill(store: Store) -> dict[str, int]:
    ids = {}
    vec = pack(np.ones(4, np.float32) / 2)
    with store.session() as s:
        for n, (rel, camera, lens, desc, kw, caption) in enumerate(ITEMS):
            skipped = rel.endswith("skipped.png")
            item = MediaItem(root="/lib", path="/lib/" + rel, size=1, mtime=1.0, camera=camera,
                             lens=lens, description=desc, keywords=kw,
                             status=STATUS_SKIPPED if skipped else STATUS_INDEXED,
                             vector=None if skipped else vec)
            s.add(item)
            s.flush()
            ids[rel] = item.id
            if caption:
                s.add(TextEntry(text=caption, text_hash=text_hash(caption),
                                source="sidecar:/lib/" + rel, item_id=item.id, vector=vec))
        s.flush()
        keywords.refresh(s, ids.values())
    return ids


def _ranking(store: Store, query: str, flt: ItemFilter | None = None):
    kq = parse_query(query)
    lib = types.SimpleNamespace(store=store)
    allowed = flt.select_ids() if flt is not None else None
    order, matches = word_ranking(lib, kq, keywords.corpus_stats(store), allowed, None)
    return [(i, round(matches[i].score, 9), matches[i].complete, matches[i].matched())
            for i in order]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s = Store(f"sqlite:///{tmp_path}/t.db") if request.param == "sqlite" else _pg_store()
    yield s
    s.close()


def test_sqlite_and_postgresql_give_the_same_results(tmp_path):
    lite = Store(f"sqlite:///{tmp_path}/t.db")
    pg = _pg_store()
    try:
        ids_l, ids_p = _fill(lite), _fill(pg)
        name_l = {v: k for k, v in ids_l.items()}
        name_p = {v: k for k, v in ids_p.items()}
        assert keywords.corpus_stats(lite) == keywords.corpus_stats(pg)
        for q in QUERIES:
            got_l = [(name_l[i], *rest) for i, *rest in _ranking(lite, q)]
            got_p = [(name_p[i], *rest) for i, *rest in _ranking(pg, q)]
            assert got_l == got_p, q
        flt = ItemFilter(path_prefixes=("/lib/holiday/IMG_0001", "/lib/holiday/IMG_0003"))
        assert [name_l[i] for i, *_ in _ranking(lite, "harbour", flt)] == \
            [name_p[i] for i, *_ in _ranking(pg, "harbour", flt)] == \
            ["holiday/IMG_0003.jpg", "holiday/IMG_0001.jpg"]
    finally:
        lite.close()
        pg.close()


def test_words_matches_and_ranking(store):
    ids = _fill(store)
    words = keywords.words_of(store, [ids["invoices/acmeReceipt_march.jpg"]])
    assert words[ids["invoices/acmeReceipt_march.jpg"]] == {
        "names": "invoices acme receipt march", "captions": "paid in full", "exif": "",
        "extra": ""}
    assert ids["misc/skipped.png"] not in keywords.words_of(store, [ids["misc/skipped.png"]])

    def names(q, flt=None):
        rid = {v: k for k, v in ids.items()}
        return [rid[i] for i, *_ in _ranking(store, q, flt)]
    assert names("acme invoice")[0] == "invoices/acme-invoice-2024.png"
    assert set(names("acme")) == {"invoices/acme-invoice-2024.png",
                                  "invoices/acmeReceipt_march.jpg"}
    assert names("lisbon") == ["holiday/IMG_0001.jpg"]          # EXIF keywords
    assert names("rf") == ["holiday/IMG_0001.jpg"]              # EXIF lens
    # plural and singular alike; the word in two fields beats it in one
    assert names("dog") == ["misc/dogs_on_beach.png", "misc/dog.png"]
    assert names("harbour") == ["holiday/IMG_0002.jpg", "holiday/IMG_0003.jpg",
                                "holiday/IMG_0001.jpg"]  # shorter caption first; EXIF weighs less
    assert [(c, m) for _, _, c, m in _ranking(store, "pets dogs")] == [
        (True, {"name": ["dogs"], "metadata": ["pets"]}),
        (False, {"name": ["dogs"], "caption": ["dogs"]})]
    # a quoted phrase matches those words, in that order, side by side, only
    assert names('"red car"') == ["holiday/IMG_0002.jpg"]
    assert names('"car red"') == []
    assert set(names("red car")) == {"holiday/IMG_0002.jpg", "holiday/IMG_0003.jpg"}
    assert names("harbour", ItemFilter(path_prefixes=("/lib/invoices/",))) == []
    assert names("nothing here") == []


def test_deleting_an_item_deletes_its_words_in_its_transaction(store):
    ids = _fill(store)
    gone = ids["holiday/IMG_0002.jpg"]
    with pytest.raises(RuntimeError):
        with store.session() as s:
            store.delete_items_with_captions([gone], session=s)
            raise RuntimeError("killed before commit")
    assert gone in keywords.words_of(store, [gone])           # rolled back together
    store.delete_items_with_captions([gone])
    assert keywords.words_of(store, [gone]) == {}
    assert [i for i, *_ in _ranking(store, '"red car"')] == []
    store.delete_items([ids["misc/dog.png"]])                  # the plain row deletion too
    assert keywords.words_of(store, [ids["misc/dog.png"]]) == {}


def test_renaming_an_item_changes_its_words_in_its_transaction(store):
    ids = _fill(store)
    item = ids["invoices/acme-invoice-2024.png"]

    def rename(commit: bool):
        with store.session() as s:
            s.execute(update(MediaItem).where(MediaItem.id == item).values(
                path="/lib/archive/globex-bill.png"))
            keywords.refresh(s, [item])
            if not commit:
                raise RuntimeError("killed before commit")
    with pytest.raises(RuntimeError):
        rename(commit=False)
    assert keywords.words_of(store, [item])[item]["names"] == "invoices acme invoice 2024"
    rename(commit=True)
    assert keywords.words_of(store, [item])[item]["names"] == "archive globex bill"
    assert item in [i for i, *_ in _ranking(store, "globex")]
    assert item not in [i for i, *_ in _ranking(store, "acme")]


def test_corpus_texts_and_extra_text_feed_the_words(store):
    ids = _fill(store)
    dog = ids["misc/dog.png"]
    vec = np.ones((1, 4), np.float32) / 2
    [tid] = store.add_texts([("a golden retriever", "notes", dog)], vec)
    assert "golden retriever" in keywords.words_of(store, [dog])[dog]["captions"]
    store.delete_texts([tid])
    assert keywords.words_of(store, [dog])[dog]["captions"] == ""
    with store.session() as s:   # the place for OCR text (issue 12)
        keywords.set_extra_text(s, dog, "ocr", "BEWARE OF THE DOG")
    assert keywords.words_of(store, [dog])[dog]["extra"] == "beware of the dog"
    assert [i for i, *_ in _ranking(store, "beware")] == [dog]
    with store.session() as s:
        keywords.set_extra_text(s, dog, "ocr", None)
    assert keywords.words_of(store, [dog])[dog]["extra"] == ""


def test_words_of_items_stored_before_the_index_are_built_on_open(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/t.db")
    ids = _fill(store)
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM item_words"))
        c.execute(text("DELETE FROM meta WHERE key = 'words_version'"))
    assert keywords.words_of(store, ids.values()) == {}
    assert keywords.ensure_built(store) == len(ids) - 1     # the skipped one has none
    assert keywords.ensure_built(store) == 0                # current now: nothing to do
    assert len(keywords.words_of(store, ids.values())) == len(ids) - 1
    store.close()
