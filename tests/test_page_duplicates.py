"""The page in headless Chromium over a library with near-duplicates and a picture of printed
words (clipsearch-mini, OCR on): folding is on by default and "+n similar" expands, the
preview shows the text read in the image, and the duplicates view lists groups with the
keeper first and records "not duplicates"."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import API_KEY, build_settings, require, require_module
from dupgen import write_library
from test_page_browser import (CHROMEDRIVER, CHROMIUM, browser, js, serving, set_viewport,  # noqa: F401
                               text_search, wait, wait_results)

from search.ingest.job import IndexJob
from search.library import Library

pytestmark = [pytest.mark.slow]
COPIES = {0: "reencoded", 1: "resized", 2: "cropped"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require("Chromium", os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
            "needs Debian's chromium and chromium-driver")
    from search import ocr
    textgen = require_module("textgen", "textgen (tests/textgen.py)")
    require("The OCR engine and DejaVu fonts", ocr.available() and textgen.fonts_available(),
            "needs the ocr extra and Debian's fonts-dejavu-core")
    base = tmp_path_factory.mktemp("pagedups")
    root = os.path.realpath(str(base / "library"))
    write_library(root, distinct=12, copies=COPIES)
    from test_ocr import draw_words
    pic = textgen.plain_picture(np.random.default_rng(5))
    os.makedirs(os.path.join(root, "scans"))
    draw_words(pic, "BOARDING PASS").save(os.path.join(root, "scans", "ticket.png"))
    settings = build_settings(str(base / "data"), model="clipsearch-mini", pretrained=None,
                              library_roots=(root,), ocr=True)
    from search.encoder import load_encoder
    library = Library(settings)
    IndexJob(library, load_encoder(settings), settings).run([root])
    library.close()
    with serving(settings) as url:
        yield url


def _load(driver, url):
    set_viewport(driver, 1280, 800)
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def test_search_folds_near_duplicates_and_expands_them(browser, server):  # noqa: F811 (the imported fixture)
    _load(browser, server + "/")
    assert js(browser, "return document.getElementById('fold-similar').checked")
    text_search(browser, "p00000")  # the names of an original and its re-encoded copy
    wait_results(browser)
    names = js(browser, "return Array.from(document.querySelectorAll('#results .name'))"
                        ".map(n => n.textContent)")
    assert len([n for n in names if n.startswith("p00000")]) == 1
    first = "document.querySelector('#results > li')"
    assert js(browser, f"return {first}.querySelector('.fold').textContent") == "+1 similar"
    js(browser, f"{first}.querySelector('.fold').click()")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#results > li.folded')"
                                  ".length") == 1)
    shown = js(browser, "return Array.from(document.querySelectorAll('#results .name'))"
                        ".slice(0, 2).map(n => n.textContent)")
    assert sorted(shown) == ["p00000-reencoded.jpg", "p00000.jpg"]
    js(browser, f"{first}.querySelector('.fold').click()")  # and folds back
    assert js(browser, "return document.querySelectorAll('#results > li.folded').length") == 0
    # switched off, both copies are plain hits
    js(browser, "document.getElementById('fold-similar').click()")
    wait(browser, lambda d: len([n for n in js(d, "return Array.from(document.querySelectorAll("
                                                  "'#results .name')).map(n => n.textContent)")
                                 if n.startswith("p00000")]) == 2)


def test_preview_shows_the_text_read_in_the_image(browser, server):  # noqa: F811 (the imported fixture)
    _load(browser, server + "/")
    text_search(browser, "boarding pass")
    js(browser, "document.querySelector('#results > li .thumb').click()")
    wait(browser, lambda d: js(d, "return !document.getElementById('preview-ocr').hidden"))
    assert "BOARDING PASS" in js(browser, "return document.getElementById('preview-ocr')"
                                          ".textContent")


def test_duplicates_view_lists_groups_and_records_a_decision(browser, server):  # noqa: F811 (the imported fixture)
    _load(browser, server + "/duplicates")
    js(browser, "document.getElementById('dup-threshold').value = '0.1';"
                "document.getElementById('dup-find').click()")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('.dup-group').length") == 3)
    keepers = js(browser, "return Array.from(document.querySelectorAll('.dup-group'))"
                          ".map(g => g.querySelector('.dup-item').classList.contains('keeper'))")
    assert keepers == [True, True, True]
    # without a key the decision is refused and said so
    js(browser, "document.querySelector('.dup-distinct').click()")
    wait(browser, lambda d: "API key" in d.find_element("id", "dup-status").text)
    js(browser, f"document.getElementById('dup-key').value = '{API_KEY}';"
                "document.querySelector('.dup-distinct').click()")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('.dup-group').length") == 2)
    js(browser, "document.getElementById('dup-find').click()")  # and it stays remembered
    wait(browser, lambda d: "2 groups" in d.find_element("id", "dup-status").text)
