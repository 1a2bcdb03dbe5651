"""The picture families of the bundled model's training data (indexer.training.sources).

Needs the Debian packages that `make sysdeps` and .ci/run install (fonts-symbola,
gcompris-qt-data, the icon themes); a missing one must fail loudly, naming it.
"""
from __future__ import annotations

import hashlib

import pytest

from indexer.training import data, gcompris, icons, sources
from indexer.training.rcc import RccError, read_rcc
from indexer.training.train import Recipe
from search.errors import DependencyMissing


@pytest.fixture(scope="module")
def pictures():
    return sources.load_pictures()


def test_every_family_is_there_and_large_enough(pictures):
    counts = {f: len(sources.family_ids(pictures, f)) for f in sources.FAMILIES}
    # leave-one-source-out needs >= 300 pictures per family (docs/model.md)
    assert all(n >= 300 for n in counts.values()), counts
    for g in pictures:
        assert g.name and g.image.mode == "RGBA" and max(g.image.size) <= 256
    assert len({g.text for g in pictures}) == len(pictures)  # keys are unique


def test_emoji_come_first_and_their_splits_are_unchanged(pictures):
    noto = data.load_glyphs()
    assert [g.text for g in pictures[:len(noto)]] == [g.text for g in noto]

    def digest(glyphs):
        h = hashlib.sha256()
        for p in data.pairs(glyphs, 40, split="heldout", size=48):
            h.update(p.caption.encode() + p.paraphrase.encode() + p.image.tobytes())
        return h.hexdigest()

    assert digest(noto) == digest(pictures)


def test_source_split_shows_each_picture_once(pictures):
    pairs = data.pairs(pictures, 100_000, split="source:icons", size=32)
    assert len(pairs) == len(sources.family_ids(pictures, "icons"))
    assert len({p.scene.items[0].glyph for p in pairs}) == len(pairs)
    assert all("icon" in p.caption or p.caption == pictures[p.scene.items[0].glyph].name
               or p.caption.startswith("a picture of") for p in pairs)


def test_training_captions_leave_out_the_excluded_family(pictures):
    families = Recipe(exclude="gcompris").families()
    assert "gcompris" not in families and "icons" in families
    capset = data.training_captions(pictures, 400, 0, families)
    used = {it.glyph for s in capset.scenes for it in s.items if it.glyph is not None}
    assert used and all(pictures[i].family != "gcompris" for i in used)
    with pytest.raises(ValueError, match="unknown picture family"):
        Recipe(exclude="openclipart").families()


def test_missing_packages_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(gcompris, "RCC_DIR", str(tmp_path))
    with pytest.raises(DependencyMissing, match="gcompris-qt-data"):
        gcompris.require_installed()
    monkeypatch.setitem(icons.THEMES, "tango", ("tango-icon-theme", str(tmp_path / "none")))
    with pytest.raises(DependencyMissing, match="tango-icon-theme"):
        icons.require_installed()
    monkeypatch.setattr(sources, "SYMBOLA_PATHS", (str(tmp_path / "none.ttf"),))
    with pytest.raises(DependencyMissing, match="fonts-symbola"):
        sources.find_symbola()


def test_rcc_reader_and_names(tmp_path):
    files = read_rcc(gcompris.rcc_path("lang"), want=lambda p: p.endswith("words_sample.json"))
    assert list(files) == ["gcompris/src/activities/lang/resource/words_sample.json"]
    assert b"description" in files["gcompris/src/activities/lang/resource/words_sample.json"]
    bad = tmp_path / "x.rcc"
    bad.write_bytes(b"not a resource")
    with pytest.raises(RccError):
        read_rcc(str(bad))
    assert gcompris.words_of("screwDriver2") == "screw driver"
    assert gcompris.words_of("17_lion") == "lion"
    assert gcompris.words_of("statueofLiberty") == "statue of liberty"
