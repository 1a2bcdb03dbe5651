"""The Python API exported by ``search``: the README's example as written, and its edges."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import search

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(("red", "blue", "green", "yellow")):
        img = Image.new("RGB", (96, 72), "white")
        img.paste(colour, (20 + i, 10, 70, 60))
        img.save(photos / f"{colour}.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "example.py").write_text(_readme_example(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(ROOT)}
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "4 added, 1 skipped"
    hits = [ln for ln in lines if ln.endswith(".png")]
    # hybrid search: red.png holds the word "red" in its name, so it is first and is kept by
    # the relevance cut-off whatever the picture scores; the others only if relevant
    assert 1 <= len(hits) <= 3
    assert hits[0].endswith("{'name': ['red']}  " + str(photos / "red.png"))
    mode, kept, _, cut, _ = lines[1 + len(hits)].split()
    assert mode == "hybrid" and int(kept) == len(hits) and int(kept) + int(cut) == 4
    assert lines[-1] == "400 k must be between 1 and 1000"


def test_only_the_documented_names_are_exported():
    assert sorted(search.__all__) == ["Collection", "Hit", "Page", "SearchError", "Summary",
                                      "open"]
    assert dir(search) == sorted(search.__all__)
    with pytest.raises(AttributeError):
        search.Library  # noqa: B018  (the low-level class is not part of the API)


@pytest.fixture
def opened(tmp_path, make_settings, tiny_model):
    root = tmp_path / "lib"
    root.mkdir()
    for i in range(6):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            root / f"{i}.{'png' if i % 2 else 'jpg'}")
    with search.open(tmp_path / "data", model=tiny_model, pretrained="none", device="cpu",
                     workers=0) as library:
        summary = library.index([root])
        assert summary.added == 6
        yield library, root


def test_every_kind_of_query_and_the_rest_api_options(opened):
    library, root = opened
    by_text = library.search("noise", k=4)
    assert len(by_text.hits) == 4 and by_text.has_more
    first = by_text.hits[0]
    assert library.search(item=first.id, k=1).hits[0].id == first.id
    data = open(first.item["path"], "rb").read()
    assert library.search(image=data, k=1).hits[0].id == first.id
    assert library.search(image=first.item["path"], k=1).hits[0].score == pytest.approx(1.0,
                                                                                        abs=1e-4)
    vec = library.service.item_vector(first.id)
    assert library.search(vector=vec, k=1).hits[0].id == first.id
    pngs = library.search("noise", k=10, format="png")
    assert {h.item["format"] for h in pngs.hits} == {"PNG"} and len(pngs.hits) == 3
    page2 = library.search("noise", k=2, offset=2)
    assert [h.id for h in page2.hits] == [h.id for h in by_text.hits[2:4]]
    assert library.item(first.id)["path"] == first.item["path"]
    assert library.search_texts("noise", k=3).hits == []   # no corpus texts in this library


def test_bad_queries_raise_typed_errors(opened):
    library, _ = opened
    with pytest.raises(search.SearchError) as e:
        library.search("x", k=0)
    assert e.value.status == 400
    with pytest.raises(search.SearchError):
        library.search("x", image=b"\x89PNG")          # two queries at once
    with pytest.raises(search.SearchError) as e:
        library.search(image=b"not an image")
    assert e.value.status in (400, 415)
    with pytest.raises(search.SearchError) as e:
        library.item(10**9)
    assert e.value.status == 404
    with pytest.raises(TypeError):
        library.search("x", colour="red")
    with pytest.raises(search.SearchError):
        library.search("x", captured_after="yesterday")


def test_a_script_without_a_main_guard_runs_once_with_decoder_processes(tmp_path, tiny_model):
    """Decoder processes do not import the user's main script (search/ingest/spawning.py):
    a script that indexes at top level, with no ``if __name__ == "__main__":``, runs its
    body once and indexes with two decoder processes (plain ``spawn`` re-ran it in each)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            photos / f"{i}.png")
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os, sys\n"
        "import search\n"
        "print('body', os.getpid(), flush=True)\n"
        f"lib = search.open({str(tmp_path / 'data')!r}, model={tiny_model!r}, "
        "pretrained='none', device='cpu', workers=2)\n"
        f"summary = lib.index([{str(photos)!r}])\n"
        "print('added', summary.added, flush=True)\n"
        "lib.close()\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["body", "added"], proc.stdout
    assert lines[-1] == "added 12"
    assert "a decoder process died" not in proc.stderr
