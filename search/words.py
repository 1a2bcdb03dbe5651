"""Words: how names, captions and metadata become searchable tokens, how a keyword query is
read, and how matching items are ranked (BM25 over fields). Pure functions, no database.

Both databases' full-text engines (SQLite FTS5, PostgreSQL ``tsvector``) index the
*normalised* text made here: lower-case tokens separated by single spaces. The engines
therefore see the same tokens whatever their own parsers would do, and only decide which
items match; the ranking is computed here, so SQLite and PostgreSQL rank alike.

Normalisation: Unicode NFKD with accents removed, case folded; split on anything that is
not a letter or digit (so ``_``, ``-``, ``.`` and spaces), between a lower-case and an
upper-case letter (``acmeInvoice`` -> ``acme invoice``, ``HTMLFile`` -> ``html file``)
and between letters and digits (``IMG2024`` -> ``img 2024``). Tokens longer than
:data:`MAX_TOKEN` characters are dropped.

Queries: words outside quotes match in any field, singular and plural alike (``dogs``
finds ``dog``; English rules, see :func:`variants`); a quoted phrase (``"acme invoice"``)
matches only those words, in that order, next to each other, within one field. Common
English words (:data:`STOPWORDS`) are ignored outside quotes unless the query has no
other word.
"""
from __future__ import annotations

import math
import os
import re
import unicodedata
from dataclasses import dataclass, field

MAX_TOKEN = 64
#: the searchable fields of an item, in storage order, with their BM25 weights
FIELDS = ("names", "captions", "exif", "extra")
FIELD_WEIGHTS = {"names": 1.0, "captions": 1.0, "exif": 0.6, "extra": 0.8}
#: how the API names the fields when it says where a word matched
FIELD_LABELS = {"names": "name", "captions": "caption", "exif": "metadata", "extra": "text"}
BM25_K1 = 1.2
BM25_B = 0.75
STOPWORDS = frozenset("""a an and are as at be by for from has have in into is it its of on
or that the their there this to was were with""".split())
_QUOTED = re.compile(r'"([^"]*)"')


def normalise(text: str) -> str:
    """Accents removed (NFKD), other characters kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str | None) -> list[str]:
    """The searchable tokens of ``text`` (see the module docstring)."""
    if not text:
        return []
    out: list[str] = []
    run: list[str] = []

    def flush():
        if run:
            word = "".join(run).casefold()
            if len(word) <= MAX_TOKEN:
                out.append(word)
            run.clear()

    chars = normalise(text)
    for i, c in enumerate(chars):
        if not c.isalnum():
            flush()
            continue
        if run:
            prev = run[-1]
            nxt = chars[i + 1] if i + 1 < len(chars) else ""
            if ((prev.isalpha() != c.isalpha())                       # letters <-> digits
                    or (prev.islower() and c.isupper())               # acmeInvoice
                    or (prev.isupper() and c.isupper() and nxt.islower())):  # HTMLFile
                flush()
        run.append(c)
    flush()
    return out


def joined(text: str | None) -> str:
    """``text`` as stored for the full-text engines: its tokens joined by spaces."""
    return " ".join(tokens(text))


def name_words(path: str, root: str) -> str:
    """The folder and file-name words of ``path`` below ``root`` (no extension, no root)."""
    rel = os.path.relpath(path, root) if root and path.startswith(root) else os.path.basename(path)
    parts = rel.replace("\\", "/").split("/")
    parts[-1] = os.path.splitext(parts[-1])[0]
    return " ".join(w for p in parts if p not in ("", ".", "..") for w in tokens(p))


def variants(word: str) -> tuple[str, ...]:
    """``word`` with its English singular or plural (``box``/``boxes``, ``berry``/``berries``);
    numbers and very short words stay as they are."""
    if not word.isalpha() or len(word) < 3:
        return (word,)
    out = [word]
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    elif word.endswith(("ses", "xes", "zes", "ches", "shes")):
        out.append(word[:-2])
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        out.append(word[:-1])
    else:
        if word.endswith("y") and word[-2] not in "aeiou":
            out.append(word[:-1] + "ies")
        elif word.endswith(("s", "x", "z", "ch", "sh")):
            out.append(word + "es")
        else:
            out.append(word + "s")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Unit:
    """One part of a keyword query: a word (any of its ``forms``) or a quoted phrase."""

    forms: tuple[tuple[str, ...], ...]  # alternatives; each a sequence of tokens
    label: str                          # as the user wrote it (normalised)

    @property
    def is_phrase(self) -> bool:
        return len(self.forms) == 1 and len(self.forms[0]) > 1


@dataclass(frozen=True)
class KeywordQuery:
    units: tuple[Unit, ...] = ()
    text: str = ""  # the query without its quote marks: what the vector side encodes

    @property
    def empty(self) -> bool:
        return not self.units


def parse_query(text: str) -> KeywordQuery:
    """Words and quoted phrases of a text query (see the module docstring)."""
    phrases = [tokens(m) for m in _QUOTED.findall(text)]
    rest = _QUOTED.sub(" ", text).replace('"', " ")
    words = tokens(rest)
    kept = [w for w in words if w not in STOPWORDS] or words
    units: list[Unit] = []
    seen: set = set()
    for p in phrases:
        if p and tuple(p) not in seen:
            seen.add(tuple(p))
            units.append(Unit((tuple(p),), " ".join(p)))
    for w in kept:
        forms = tuple((f,) for f in variants(w))
        if forms not in seen:
            seen.add(forms)
            units.append(Unit(forms, w))
    return KeywordQuery(tuple(units), " ".join(text.replace('"', " ").split()))


def _count(seq: list[str], form: tuple[str, ...]) -> int:
    n = len(form)
    if n == 1:
        return seq.count(form[0])
    return sum(1 for i in range(len(seq) - n + 1) if tuple(seq[i:i + n]) == form)


@dataclass
class WordMatch:
    """How one item matched a keyword query."""

    score: float                                   # BM25 over the weighted fields
    complete: bool                                 # every unit found in some field
    where: dict[str, list[str]] = field(default_factory=dict)  # field label -> unit labels

    def matched(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.where.items() if v}


@dataclass(frozen=True)
class CorpusStats:
    """What BM25 needs about all items with words: their number and mean field lengths."""

    n: int
    mean_lengths: dict[str, float]


def idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def score_item(query: KeywordQuery, fields: dict[str, str], stats: CorpusStats,
               doc_freq: dict[Unit, int]) -> WordMatch:
    """BM25 of one item's ``fields`` (normalised text by field name) for ``query``."""
    split = {f: (fields.get(f) or "").split() for f in FIELDS}
    total = 0.0
    found_all = True
    where: dict[str, list[str]] = {FIELD_LABELS[f]: [] for f in FIELDS}
    for unit in query.units:
        weight = idf(stats.n, doc_freq.get(unit, 0))
        hit = False
        for f in FIELDS:
            seq = split[f]
            tf = sum(_count(seq, form) for form in unit.forms)
            if not tf:
                continue
            hit = True
            where[FIELD_LABELS[f]].append(unit.label)
            mean = max(stats.mean_lengths.get(f, 1.0), 1.0)
            norm = 1.0 - BM25_B + BM25_B * len(seq) / mean
            total += weight * FIELD_WEIGHTS[f] * tf * (BM25_K1 + 1) / (tf + BM25_K1 * norm)
        found_all = found_all and hit
    return WordMatch(total, found_all, where)


def fts5_match(query: KeywordQuery, unit: Unit | None = None) -> str:
    """The FTS5 MATCH expression for ``query`` (any unit), or for one ``unit``."""
    units = (unit,) if unit is not None else query.units
    return " OR ".join('"' + " ".join(form) + '"' for u in units for form in u.forms)


def tsquery(query: KeywordQuery, unit: Unit | None = None) -> str:
    """The PostgreSQL ``tsquery`` text (cast, not parsed) for ``query`` or one ``unit``.

    A phrase must lie within one field: it is asked for under each field's weight label."""
    labels = "ABCD"
    parts = []
    for u in ((unit,) if unit is not None else query.units):
        for form in u.forms:
            if len(form) == 1:
                parts.append(_lexeme(form[0]))
            else:
                parts += ["(" + " <-> ".join(f"{_lexeme(t)}:{lab}" for t in form) + ")"
                          for lab in labels]
    return " | ".join(parts)


def _lexeme(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"
