"""Words and fusion without a database: tokens, query parsing, BM25, reciprocal rank fusion."""
from __future__ import annotations

import pytest

from search.fusion import rrf
from search.words import (CorpusStats, fts5_match, name_words, parse_query, score_item, tokens,
                          tsquery, variants)


@pytest.mark.parametrize("text, expected", [
    ("acme-invoice_2024.final.PNG", ["acme", "invoice", "2024", "final", "png"]),
    ("acmeInvoice", ["acme", "invoice"]),
    ("HTMLFile2Parse", ["html", "file", "2", "parse"]),
    ("IMG_20240101_Crème Brûlée", ["img", "20240101", "creme", "brulee"]),
    ("  ", []),
    ("Straße", ["strasse"]),
])
def test_tokens_split_on_separators_camel_case_and_digits(text, expected):
    assert tokens(text) == expected


def test_name_words_are_folders_below_the_root_and_the_stem():
    assert name_words("/photos/Holidays 2021/acme-invoice.jpg", "/photos") == \
        "holidays 2021 acme invoice"
    assert name_words("/elsewhere/x/redCar.png", "/photos") == "red car"


def test_variants_pair_singular_and_plural():
    assert variants("dogs") == ("dogs", "dog")
    assert variants("dog") == ("dog", "dogs")
    assert variants("berries") == ("berries", "berry")
    assert variants("berry") == ("berry", "berries")
    assert variants("boxes") == ("boxes", "box")
    assert variants("glass") == ("glass", "glasses")
    assert variants("2024") == ("2024",)


def test_query_keeps_quoted_phrases_whole_and_drops_stopwords():
    q = parse_query('a photo of the "Red Car" near dogs')
    labels = [u.label for u in q.units]
    assert labels == ["red car", "photo", "near", "dogs"]
    assert q.units[0].is_phrase and q.units[0].forms == (("red", "car"),)
    assert q.text == "a photo of the Red Car near dogs"
    assert parse_query("the a").units[0].label == "the"  # only stopwords: keep them
    assert parse_query('""').empty


def test_engine_expressions():
    q = parse_query('"red car" dogs')
    assert fts5_match(q) == '"red car" OR "dogs" OR "dog"'
    # a phrase must stay within one field: asked for under each field's weight label
    assert tsquery(q) == ("('red':A <-> 'car':A) | ('red':B <-> 'car':B) | "
                          "('red':C <-> 'car':C) | ('red':D <-> 'car':D) | 'dogs' | 'dog'")


def test_bm25_scores_fields_and_completeness():
    q = parse_query("acme invoice")
    stats = CorpusStats(100, {"names": 3.0, "captions": 5.0, "exif": 2.0, "extra": 0.0})
    dfs = {q.units[0]: 2, q.units[1]: 10}
    both = score_item(q, {"names": "acme invoice 2024"}, stats, dfs)
    one = score_item(q, {"names": "invoice"}, stats, dfs)
    assert both.complete and not one.complete
    assert both.score > one.score > 0
    assert both.matched() == {"name": ["acme", "invoice"]}
    rare = score_item(q, {"names": "acme"}, stats, dfs)
    assert rare.score > one.score  # the rarer word weighs more (idf)
    phrase = parse_query('"invoice acme"')
    assert not score_item(phrase, {"names": "acme invoice"}, stats, {}).complete
    assert score_item(phrase, {"captions": "an invoice acme sent"}, stats, {}).complete


def test_rrf_against_a_hand_computed_fusion():
    vector = [10, 20, 30, 40]
    words = [30, 50, 10]
    # by hand, k = 60:
    #   10: 1/61 + 1/63 = 0.0322664...   30: 1/63 + 1/61 = the same (tie)
    #   20: 1/62 = 0.016129   50: 1/62 = the same (tie)   40: 1/64 = 0.015625
    fused = rrf([vector, words])
    expected = {10: 1 / 61 + 1 / 63, 30: 1 / 63 + 1 / 61, 20: 1 / 62, 50: 1 / 62, 40: 1 / 64}
    assert [i for i, _ in fused] == [10, 30, 20, 50, 40]  # ties by id
    for i, s in fused:
        assert s == pytest.approx(expected[i], abs=1e-15)
    # a tie-break (e.g. the better cosine first) decides between equal fused scores
    assert [i for i, _ in rrf([vector, words], tie_break={30: -0.9, 10: -0.1})][:2] == [30, 10]
    assert rrf([[1, 2], [2, 1]], k=1) == [(1, 1 / 2 + 1 / 3), (2, 1 / 3 + 1 / 2)]
