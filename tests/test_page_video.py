"""The search page with videos, in real headless Chromium: a video hit shows the time of
its best moment, plays from that second, lists its moments as chapters, and a moment
searches for more like it. Helpers and the browser come from test_page_browser."""
from __future__ import annotations

import os

import pytest
from conftest import require_module
from test_page_browser import (browser, js, pytestmark, serving, set_viewport,  # noqa: F401
                               text_search, wait)

from search.config import Settings

videogen = require_module("videogen", "PyAV", "needs PyAV and the emoji font (see Makefile)")
By = require_module("selenium.webdriver.common.by", "selenium", "pip install -e '.[dev]'").By


@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    from search.encoder import load_encoder
    from search.ingest.job import IndexJob
    from search.library import Library

    base = tmp_path_factory.mktemp("page-video")
    root = os.path.realpath(str(base / "media"))
    os.makedirs(root)
    videogen.write_video(os.path.join(root, "story.webm"), videogen.story(), audio=True)
    videogen.picture("shape", shape="square", colour="blue").save(os.path.join(root, "sq.png"))
    settings = Settings.from_env({}, data_dir=str(base / "data"), model="clipsearch-mini",
                                 device="cpu", workers=0, rate_limit=0, library_roots=(root,))
    lib = Library(settings)
    summary = IndexJob(lib, load_encoder(settings), settings).run([root])
    assert summary.added == 2, summary.to_dict()
    lib.close()
    with serving(settings) as url:
        yield url


def _video_state(driver) -> dict:
    return js(driver, """
        const v = document.getElementById('preview-video');
        return {hidden: v.hidden, ready: v.readyState, t: v.currentTime,
                error: v.error ? v.error.code : null, src: v.getAttribute('src') || ''};""")


def test_video_hit_plays_from_its_moment_with_chapters(browser, video_server):  # noqa: F811
    set_viewport(browser, 1280, 800)
    browser.get(video_server + "/")
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    text_search(browser, "a cat")
    first = browser.find_element(By.CSS_SELECTOR, "#results > li")
    clock = first.find_element(By.CSS_SELECTOR, ".clock")
    assert clock.is_displayed() and clock.text in ("0:03–0:09", "0:04–0:09", "0:05–0:09")
    first.find_element(By.CSS_SELECTOR, ".thumb").click()
    wait(browser, lambda d: js(d, "return document.getElementById('preview').open"))
    wait(browser, lambda d: _video_state(d)["ready"] >= 1 or _video_state(d)["error"])
    state = _video_state(browser)
    assert not state["hidden"] and state["error"] is None and "#t=" in state["src"]
    wait(browser, lambda d: abs(_video_state(d)["t"] - 4) <= 1)
    chapters = browser.find_elements(By.CSS_SELECTOR, "#preview-chapters li")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#preview-chapters li")) == 3)
    chapters = browser.find_elements(By.CSS_SELECTOR, "#preview-chapters li")
    assert "match" in chapters[1].get_attribute("class")
    chapters[0].find_element(By.CSS_SELECTOR, ".chapter").click()
    wait(browser, lambda d: _video_state(d)["t"] < 1)
    chapters[2].find_element(By.XPATH, ".//button[text()='More like this moment']").click()
    wait(browser, lambda d: not js(d, "return document.getElementById('preview').open"))
    assert _video_state(browser)["hidden"]  # closed: the player stopped and emptied
    wait(browser, lambda d: "More like story.webm at 0:0" in
         d.find_element(By.ID, "example-label").text)
    assert "moment=" in browser.current_url
