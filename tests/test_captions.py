"""Sidecar captions edited, added or deleted next to images that did not change."""
from __future__ import annotations

import os
import time

import numpy as np
from conftest import build_settings
from imagegen import make_library

from search.ingest.job import IndexJob
from search.library import Library


def _captions(library) -> dict[str, str]:
    from sqlalchemy import select

    from search.store import TextEntry
    with library.store.session() as s:
        return {src.split(":", 1)[1]: text for src, text in
                s.execute(select(TextEntry.source, TextEntry.text))}


def _touch_later(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    later = time.time() + 5  # newer than the stored caption whatever the clock resolution
    os.utime(path, (later, later))


def test_caption_only_changes_are_picked_up(tmp_path, encoder):
    root = str(tmp_path / "photos")
    lib = make_library(root, n_good=12, seed=4, with_bad=False)
    images = sorted(os.path.realpath(p) for p in lib.good)
    side = {p: os.path.splitext(p)[0] + ".txt" for p in images}
    for p in images[:4]:
        with open(side[p], "w") as f:
            f.write(f"first caption of {os.path.basename(p)}")
    settings = build_settings(str(tmp_path / "data"))
    library = Library(settings)
    first = IndexJob(library, encoder, settings).run([root])
    assert first.texts_added == 4
    ids_before = {p: st.id for p, st in library.store.file_states().items()}

    _touch_later(side[images[0]], "an edited caption")       # edited
    os.unlink(side[images[1]])                               # deleted
    _touch_later(side[images[5]], "a caption added later")   # new, image unchanged
    again = IndexJob(library, encoder, settings).run([root])

    assert again.unchanged == len(images) and again.added == again.updated == 0
    assert again.texts_added == 2
    captions = _captions(library)
    assert captions[images[0]] == "an edited caption"
    assert images[1] not in captions
    assert captions[images[5]] == "a caption added later"
    assert captions[images[2]].startswith("first caption")      # untouched ones stay
    assert len(captions) == 4
    assert {p: st.id for p, st in library.store.file_states().items()} == ids_before
    # the text index follows the store: the edited caption finds its image's text
    library.load()
    texts = library.indexes["texts"]
    assert np.array_equal(texts.ids(), library.store.vector_ids("texts"))
    q = encoder.encode_texts(["an edited caption"])
    _, found = library.search("texts", q, 1)
    got = library.store.get_texts([int(found[0, 0])])[int(found[0, 0])]
    assert got.text == "an edited caption" and got.item_id == ids_before[images[0]]
    # a third run with nothing changed touches no caption
    assert IndexJob(library, encoder, settings).run([root]).texts_added == 0
