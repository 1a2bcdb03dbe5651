"""The search page driven in real headless Chromium against a real server on 127.0.0.1.

The server is ``web.create_app(settings)`` under werkzeug's threaded server, over an
index built by the real indexer from generated pictures (coloured shapes with sidecar
captions) with the tiny open_clip config and random weights. Needs Debian's
``chromium`` and ``chromium-driver`` and Selenium; skipped when Chromium is absent,
except under CI where that is a failure.

``CLIPSEARCH_SAVE_SCREENSHOT=1`` also writes the 1280x800 screenshot to
``docs/screenshot.png`` (it is always taken and checked in a temporary folder).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import random
import re
import shutil
import threading
import urllib.request

import pytest
from conftest import require, require_module
from imagegen import save_image
from PIL import Image, ImageDraw

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY_MODEL = os.path.join(HERE, "tiny-clip.json")
N_IMAGES = 40
PAGE_SIZE = 24  # what app.js asks for per page
WAIT_S = 20

pytestmark = pytest.mark.slow

require("Chromium", os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
        "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
webdriver = require_module("selenium.webdriver", "Selenium", "pip install -e '.[dev]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

COLOURS = {
    "red": (214, 40, 40), "orange": (245, 140, 30), "yellow": (240, 205, 40),
    "green": (46, 150, 70), "blue": (40, 90, 210), "purple": (130, 60, 180),
    "white": (245, 245, 240), "black": (30, 30, 30),
}
SHAPES = ("circle", "square", "triangle")
FORMATS = ("JPEG", "PNG", "WEBP")
EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
FOLDERS = ("holidays/2021", "holidays/2022", "garden")


# ---- a small library of captioned pictures ------------------------------------------------
def draw_shape(rng: random.Random, size: tuple[int, int], shape: str, colour: str,
               background: str) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, COLOURS[background])
    draw = ImageDraw.Draw(img)
    r = min(w, h) * rng.uniform(0.22, 0.36)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    return img


def make_shape_library(root: str) -> list[dict]:
    """Write N_IMAGES pictures (JPEG with EXIF dates, PNG, WebP) in three folders.

    Every other picture has a sidecar caption; returns one dict per picture.
    """
    rng = random.Random(7)
    names = list(COLOURS)
    made = []
    for i in range(N_IMAGES):
        shape, fmt = SHAPES[i % 3], FORMATS[(i // 3) % 3]
        colour = names[i % len(names)]
        background = names[(i * 3 + 5) % len(names)]
        if background == colour:
            background = "white" if colour != "white" else "black"
        size = (rng.randrange(200, 640), rng.randrange(200, 480))
        path = os.path.join(root, FOLDERS[i % 3], f"{colour}-{shape}-{i:02d}{EXT[fmt]}")
        date = f"20{18 + i % 5}:0{1 + i % 9}:1{i % 10} 10:30:00" if fmt == "JPEG" else None
        save_image(draw_shape(rng, size, shape, colour, background), path, fmt, exif_date=date)
        caption = f"a {colour} {shape} on a {background} background"
        if i % 2 == 0:
            with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
                f.write(caption + "\n")
        made.append({"path": path, "format": fmt, "width": size[0], "caption": caption})
    return made


@pytest.fixture(scope="module")
def library(tmp_path_factory, encoder):
    """A real index over the generated pictures plus a small text corpus.

    ``encoder`` is conftest's session-wide tiny open_clip model (random weights).
    """
    from search.config import Settings
    from search.corpus import add_texts
    from search.ingest.job import IndexJob
    from search.library import Library

    base = tmp_path_factory.mktemp("page")
    root = os.path.realpath(str(base / "photos"))
    pictures = make_shape_library(root)
    settings = Settings.from_env(
        {}, data_dir=str(base / "data"), model=TINY_MODEL, pretrained="none", device="cpu",
        workers=0, rate_limit=0, library_roots=(root,))
    lib = Library(settings)
    summary = IndexJob(lib, encoder, settings).run([root])
    assert summary.added == N_IMAGES, summary.to_dict()
    corpus = [(f"a {c} {s} on a {b} background", "corpus:shapes")
              for c in COLOURS for s in SHAPES for b in ("white", "black", "blue")]
    add_texts(lib, encoder, corpus)
    lib.close()
    return {"settings": settings, "root": root, "pictures": pictures}


@contextlib.contextmanager
def serving(settings):
    """``web.create_app(settings)`` served by werkzeug on 127.0.0.1, on a free port, in a thread."""
    from werkzeug.serving import make_server

    from web import create_app

    app = create_app(settings)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, name="page-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def server(library):
    """The page's server with the default settings: searches need no key."""
    with serving(library["settings"]) as url:
        yield url


PRIVATE_KEY = "page-test-key-5d1f9c"


@pytest.fixture(scope="module")
def private_server(library):
    """Another server over the same library whose searches need ``PRIVATE_KEY``."""
    settings = dataclasses.replace(library["settings"], search_requires_key=True,
                                   api_keys=(PRIVATE_KEY,))
    with serving(settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                 "--window-size=1280,800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, server):
    """The search page freshly loaded at 1280x800; fails the test on any browser console error."""
    set_viewport(browser, 1280, 800)
    browser.get(server + "/")
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    unfold(browser)
    browser.get_log("browser")  # start from a clean console
    browser.allowed_console_errors = ()
    yield browser
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not any(a in e["message"] for a in browser.allowed_console_errors)]
    assert not errors, f"browser console errors: {errors}"


# ---- helpers ------------------------------------------------------------------------------------
def unfold(driver) -> None:
    """Switch off the page's folding of near-duplicates (on by default): these tests count
    every hit, and the tiny random model puts many of these pictures within the default
    distance of each other. Folding is tested in test_page_duplicates.py."""
    driver.execute_script("document.getElementById('fold-similar').checked = false")


def wait(driver, condition, timeout: float = WAIT_S):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def set_viewport(driver, width: int, height: int, *, mobile: bool = False) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1,
        "mobile": mobile})


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def result_count(driver) -> int:
    return js(driver, "return document.querySelectorAll('#results > li').length")


def idle(driver) -> bool:
    return js(driver, "return !document.getElementById('results').hasAttribute('aria-busy')")


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def wait_results(driver, at_least: int = 1) -> None:
    wait(driver, lambda d: idle(d) and result_count(d) >= at_least)


def wait_thumbnails_loaded(driver, count: int) -> None:
    """The first ``count`` thumbnails were really fetched and decoded (naturalWidth > 0)."""
    wait(driver, lambda d: js(d, """
        const imgs = Array.from(document.querySelectorAll('#results img')).slice(0, arguments[0]);
        return imgs.length === arguments[0] && imgs.every(i => i.complete && i.naturalWidth > 0);
    """, count))


def text_search(driver, text: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    wait_results(driver)


def result_names(driver) -> list[str]:
    return js(driver, "return Array.from(document.querySelectorAll('#results .name'))"
                      ".map(n => n.textContent)")


def drop_file(driver, data: bytes, name: str, mime: str) -> None:
    """Dispatch dragenter/dragover/drop carrying a real File, as a drag from the desktop does."""
    js(driver, """
        const [b64, name, mime] = arguments;
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: mime}));
        const target = document.querySelector('main');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                      dataTransfer: transfer}));
        }
    """, base64.b64encode(data).decode("ascii"), name, mime)


def press(driver, *keys) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def focused(driver) -> str:
    """The focused element as "tag#id.class1.class2", for readable assertions."""
    return js(driver, """
        const e = document.activeElement;
        if (!e) return '';
        return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
            Array.from(e.classList).map(c => '.' + c).join('');""")


def dialog_open(driver) -> bool:
    return js(driver, "return document.getElementById('preview').open")


# ---- tests ---------------------------------------------------------------------------------
def test_page_is_served_with_a_strict_content_security_policy(server):
    with urllib.request.urlopen(server + "/", timeout=WAIT_S) as resp:
        csp = resp.headers["Content-Security-Policy"]
        html = resp.read().decode("utf-8")
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    # Nothing inline for the policy to allow: no script bodies, no on* handlers, no style attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and "style=" not in html
    # Assets are local (works offline) and versioned by content, so they may be cached for good.
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert {a.split("?")[0] for a in assets} >= {"/assets/app.js", "/assets/app.css"}
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    for asset in assets:
        with urllib.request.urlopen(server + asset.replace("&amp;", "&"), timeout=WAIT_S) as resp:
            assert resp.status == 200 and "immutable" in resp.headers["Cache-Control"]


def test_text_query_and_enter_shows_loaded_thumbnails_with_scores(page):
    assert focused(page) == "input#q"  # the search box has focus on load
    text_search(page, "a red circle")
    wait_thumbnails_loaded(page, 8)
    # One snapshot: infinite scroll may append the second page at any moment.
    rows = js(page, "return Array.from(document.querySelectorAll('#results > li')).map(li => "
                    "[parseFloat(li.querySelector('.score').textContent), "
                    "li.querySelector('.name').textContent, "
                    "li.querySelector('.matched').textContent])")
    assert len(rows) in (PAGE_SIZE, N_IMAGES)
    assert all(-1.0 <= s <= 1.0 for s, _, _ in rows)
    # hybrid search: pictures whose words hold "red" or "circle" are fused ahead of the
    # random-weight model's vector ranking, and say which words matched where
    assert rows[0][2].startswith("Matched: ")
    circles = [(name, m) for _, name, m in rows if name.startswith("red-circle")]
    assert len(circles) == 2  # red-circle-00 and red-circle-24, both on the first page
    assert all(m.startswith("Matched: red, circle (name)") for _, m in circles)
    assert "result" in status(page) and "a red circle" in status(page)
    assert "q=a+red+circle" in page.current_url  # bookmarkable


def test_scrolling_loads_every_page_without_repeats(page):
    text_search(page, "a shape")
    for _ in range(10):
        if result_count(page) >= N_IMAGES:
            break
        js(page, "window.scrollTo(0, document.body.scrollHeight)")
        wait(page, idle)
    wait(page, lambda d: result_count(d) == N_IMAGES)
    ids = js(page, "return Array.from(document.querySelectorAll('#results > li'))"
                   ".map(li => li.dataset.id)")
    assert len(set(ids)) == N_IMAGES
    wait(page, lambda d: not d.find_element(By.ID, "load-more").is_displayed())


def test_dropped_image_finds_itself_first(page, library):
    picture = library["pictures"][4]
    with open(picture["path"], "rb") as f:
        data = f.read()
    name = os.path.basename(picture["path"])
    drop_file(page, data, name, "image/png" if name.endswith(".png") else "image/jpeg")
    wait(page, lambda d: "images like" in status(d) and idle(d))
    wait_results(page)
    assert result_names(page)[0] == name  # identical pixels, identical vector: score 1
    assert page.find_element(By.ID, "example").is_displayed()
    assert js(page, "return document.getElementById('example-img').src").startswith("blob:")
    wait_thumbnails_loaded(page, 4)


def test_pasted_image_searches_by_example(page, library):
    with open(library["pictures"][1]["path"], "rb") as f:  # a PNG, like a pasted screenshot
        data = f.read()
    js(page, """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'image.png', {type: 'image/png'}));
        document.getElementById('q').dispatchEvent(new ClipboardEvent('paste',
            {bubbles: true, cancelable: true, clipboardData: transfer}));
    """, base64.b64encode(data).decode("ascii"))
    wait(page, lambda d: "images like pasted image" in status(d) and idle(d))
    wait_results(page)
    assert result_names(page)[0] == os.path.basename(library["pictures"][1]["path"])


def test_file_picker_searches_by_image(page, library):
    picture = library["pictures"][9]
    page.find_element(By.ID, "image-input").send_keys(picture["path"])
    wait(page, lambda d: "images like" in status(d) and idle(d))
    wait_results(page)
    assert result_names(page)[0] == os.path.basename(picture["path"])


def test_api_error_is_shown_in_the_status_area(page):
    page.allowed_console_errors = ("/api/search/image",)  # Chromium logs the failed request
    drop_file(page, b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 20, "broken.png",
              "image/png")
    wait(page, lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    shown = status(page)
    answer = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const body = new FormData();
        body.append('image', new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10])],
                                      {type: 'image/png'}), 'broken.png');
        fetch('/api/search/image', {method: 'POST', body})
            .then(r => r.json().then(j => done([r.status, j.error])));
    """)
    assert 400 <= answer[0] < 500
    assert isinstance(answer[1], str) and answer[1]
    assert shown and shown != "The server could not be reached. Is it running?"
    assert js(page, "return document.getElementById('status').getAttribute('aria-live')") == "polite"
    assert result_count(page) == 0


def test_filters_and_date_sort(page, library):
    page.find_element(By.CSS_SELECTOR, "#filters summary").click()
    form = page.find_element(By.ID, "filter-form")
    form.find_element(By.NAME, "format").send_keys("PNG")
    form.find_element(By.NAME, "min_width").send_keys("300")
    text_search(page, "a green square")
    names = result_names(page)
    wanted = {os.path.basename(p["path"]) for p in library["pictures"]
              if p["format"] == "PNG" and p["width"] >= 300}
    assert names and set(names) == wanted  # every match, and only matches
    # Folder prefix (relative to the library root).
    form.find_element(By.CSS_SELECTOR, "button[type=reset]").click()
    wait(page, lambda d: idle(d) and len(result_names(d)) >= PAGE_SIZE)
    form.find_element(By.NAME, "path_prefix").send_keys("garden", Keys.ENTER)
    in_garden = sum(1 for p in library["pictures"] if "/garden/" in p["path"])
    wait(page, lambda d: idle(d) and len(result_names(d)) == in_garden)
    paths = js(page, "return Array.from(document.querySelectorAll('#results .name'))"
                     ".map(n => n.title)")
    assert all(p.startswith("garden/") for p in paths)
    # Capture-date sort: JPEGs (the only ones with dates) newest first.
    form.find_element(By.CSS_SELECTOR, "button[type=reset]").click()
    wait(page, lambda d: idle(d) and len(result_names(d)) >= PAGE_SIZE)
    form.find_element(By.NAME, "format").send_keys("JPEG")
    form.find_element(By.NAME, "sort").send_keys("Capture")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(page, lambda d: idle(d) and all(n.endswith(".jpg") for n in result_names(d)))
    ids = js(page, "return Array.from(document.querySelectorAll('#results > li'))"
                   ".map(li => li.dataset.id)")
    dates = [page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/items/' + arguments[0]).then(r => r.json()).then(j => done(j.captured_at));
    """, i) for i in ids]
    assert all(dates) and dates == sorted(dates, reverse=True)


def test_only_relevant_switch_hides_and_shows_the_cut_hits(browser, library, tmp_path):
    """With a calibration that keeps no picture by its vector, only the pictures whose words
    hold the query stay; the note says how many were hidden and 'Show all' brings them."""
    from search.config import Settings
    from search.relevance import Calibration, CutParams

    data = str(tmp_path / "data")
    shutil.copytree(library["settings"].data_dir, data)
    settings = Settings.from_env({}, data_dir=data, model=TINY_MODEL, pretrained="none",
                                 device="cpu", workers=0, rate_limit=0,
                                 library_roots=(library["root"],))
    model = json_model(settings)
    Calibration(model, {"text_image": CutParams(0.999, 2.0, -99.0)}).save(
        os.path.join(settings.index_dir, "relevance.json"))
    with serving(settings) as url:
        set_viewport(browser, 1280, 800)
        browser.get(url + "/")
        wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        unfold(browser)
        wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        assert browser.find_element(By.ID, "only-relevant").is_selected()  # on by default
        text_search(browser, "red circle")
        names = result_names(browser)
        assert names and all(n.startswith("red-circle") for n in names)
        note = browser.find_element(By.ID, "cut-note")
        assert note.is_displayed()
        assert f"{N_IMAGES - len(names)} less relevant results hidden" in note.text
        browser.find_element(By.ID, "show-cut").click()
        wait(browser, lambda d: idle(d) and result_count(d) >= min(PAGE_SIZE, N_IMAGES))
        assert not browser.find_element(By.ID, "only-relevant").is_selected()
        assert not note.is_displayed()
        assert result_names(browser)[:len(names)] == names


def json_model(settings) -> dict:
    from search.store import Store

    store = Store(settings.database_url)
    try:
        return store.model_identity()
    finally:
        store.close()


def test_preview_shows_metadata_texts_and_escape_closes(page):
    text_search(page, "a blue triangle")
    first = page.find_element(By.CSS_SELECTOR, "#results > li .thumb")
    first.click()
    wait(page, dialog_open)
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#preview-texts li"))
    meta = page.find_element(By.ID, "preview-meta").text
    for label in ("Path", "Size", "Format", "Score"):
        assert label in meta
    texts = [li.text for li in page.find_elements(By.CSS_SELECTOR, "#preview-texts li")]
    assert texts and all(" on a " in t for t in texts)
    link = page.find_element(By.ID, "preview-open").get_attribute("href")
    assert link.startswith(page.current_url.split("/?")[0])
    assert js(page, "return document.getElementById('preview-img').naturalWidth") > 0
    assert focused(page) == "button#preview-close.icon-button"
    press(page, Keys.ESCAPE)
    wait(page, lambda d: not dialog_open(d))
    assert focused(page) == "button.thumb"


def test_keyboard_only_flow(page):
    assert focused(page) == "input#q"
    press(page, "a yellow circle", Keys.ENTER)
    wait_results(page)
    # Tab from the search box to the first result; every stop shows a focus ring.
    for _ in range(12):
        press(page, Keys.TAB)
        assert js(page, "return getComputedStyle(document.activeElement).outlineStyle") != "none"
        if focused(page) == "button.thumb":
            break
    else:
        pytest.fail("Tab never reached a result")
    first_id = js(page, "return document.activeElement.closest('li').dataset.id")
    assert js(page, "return document.querySelector('#results > li').dataset.id") == first_id
    press(page, Keys.ENTER)
    wait(page, dialog_open)
    # focus moves are asynchronous (dialog opening, results rendering): wait, don't sample
    wait(page, lambda d: focused(d) == "button#preview-close.icon-button")
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#preview-texts li"))
    press(page, Keys.ESCAPE)
    wait(page, lambda d: not dialog_open(d))
    wait(page, lambda d: js(d, "const li = document.activeElement.closest('li');"
                               "return li ? li.dataset.id : null") == first_id)
    # Next stop is "More like this" of the same result.
    press(page, Keys.TAB)
    assert focused(page) == "button.similar.link-button"
    press(page, Keys.ENTER)
    wait(page, lambda d: "images like" in status(d) and idle(d))
    wait_results(page)
    assert first_id not in js(page, "return Array.from(document.querySelectorAll("
                                    "'#results > li')).map(li => li.dataset.id)")
    assert "like=" + first_id in page.current_url
    wait(page, lambda d: focused(d) == "ul#results.grid")  # focus moved to the new results
    press(page, Keys.TAB)
    assert focused(page) == "button.thumb"


def test_phone_width_has_two_columns_and_no_horizontal_scroll(page, server):
    set_viewport(page, 360, 740, mobile=True)
    page.get(server + "/?q=a+purple+square")
    wait_results(page)
    assert js(page, "return window.innerWidth") == 360
    columns = js(page, "return getComputedStyle(document.getElementById('results'))"
                       ".gridTemplateColumns.trim().split(/\\s+/).length")
    assert columns in (1, 2)
    no_overflow = "return document.documentElement.scrollWidth <= window.innerWidth"
    assert js(page, no_overflow)
    page.find_element(By.CSS_SELECTOR, "#filters summary").click()
    assert js(page, no_overflow)
    page.find_element(By.CSS_SELECTOR, "#results > li .thumb").click()
    wait(page, dialog_open)
    rect = js(page, "const r = document.getElementById('preview').getBoundingClientRect();"
                    "return [r.left, r.right];")
    assert rect[0] >= 0 and rect[1] <= 360
    press(page, Keys.ESCAPE)
    wait(page, lambda d: not dialog_open(d))


def test_screenshot_with_results(page, tmp_path):
    text_search(page, "a red circle")
    js(page, "document.activeElement.blur(); window.scrollTo(0, 0)")
    count = js(page, """
        return Array.from(document.querySelectorAll('#results img'))
            .filter(i => i.getBoundingClientRect().top < window.innerHeight).length""")
    wait_thumbnails_loaded(page, count)
    shot = tmp_path / "screenshot.png"
    assert page.save_screenshot(str(shot))
    with Image.open(shot) as img:
        assert img.size == (1280, 800)
    if os.environ.get("CLIPSEARCH_SAVE_SCREENSHOT") == "1":
        os.makedirs(os.path.join(REPO, "docs"), exist_ok=True)
        shutil.copyfile(shot, os.path.join(REPO, "docs", "screenshot.png"))


def fetches_done(driver) -> bool:
    """Every thumbnail the browser has begun to fetch is complete (no currentSrc: a lazy
    image not begun)."""
    return js(driver, "return Array.from(document.querySelectorAll('#results img'))"
                      ".every(i => i.complete || !i.currentSrc)")


def test_private_server_asks_for_the_key_and_then_shows_thumbnails(browser, private_server):
    # Cookies are per host, not per port: start and end without any.
    browser.delete_all_cookies()
    set_viewport(browser, 360, 740, mobile=True)
    browser.get(private_server + "/")
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    unfold(browser)
    browser.get_log("browser")
    key_form = browser.find_element(By.ID, "key-form")
    message = browser.find_element(By.ID, "key-message")
    box = browser.find_element(By.ID, "key-input")
    try:
        # The page asks the server (GET /api/session) and shows the form at once...
        wait(browser, lambda d: key_form.is_displayed() and "API key" in status(d))
        # ...and a search that answers 401 leads to it too.
        q = browser.find_element(By.ID, "q")
        q.send_keys("a red circle", Keys.ENTER)
        wait(browser, lambda d: "API key" in status(d) and idle(d))
        assert key_form.is_displayed() and result_count(browser) == 0
        assert focused(browser) == "input#key-input"  # the next keystrokes go to the key
        assert js(browser, "return document.documentElement.scrollWidth <= window.innerWidth")
        assert key_form.rect["x"] >= 0 and key_form.rect["x"] + key_form.rect["width"] <= 360

        press(browser, "not-the-key", Keys.ENTER)
        wait(browser, lambda d: message.text == "The API key was refused.")
        assert key_form.is_displayed() and result_count(browser) == 0

        box.clear()
        box.send_keys(PRIVATE_KEY, Keys.ENTER)
        wait(browser, lambda d: not key_form.is_displayed())
        wait_results(browser)  # the failed search ran again
        wait_thumbnails_loaded(browser, 4)
        assert browser.find_element(By.ID, "session-bar").is_displayed()
        assert "red circle" in status(browser)
        # The key is nowhere the page could leak it; the cookie is out of the script's reach.
        assert PRIVATE_KEY not in browser.current_url
        kept = js(browser, "return JSON.stringify([Object.entries(localStorage), "
                           "Object.entries(sessionStorage), document.cookie])")
        assert PRIVATE_KEY not in kept and "clipsearch_session" not in kept
        cookie = browser.get_cookie("clipsearch_session")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert PRIVATE_KEY not in cookie["value"]

        # A reload keeps the session (the page learns it from GET /api/session).
        browser.refresh()
        wait_results(browser)
        wait(browser, lambda d: d.find_element(By.ID, "session-bar").is_displayed())
        key_form = browser.find_element(By.ID, "key-form")
        message = browser.find_element(By.ID, "key-message")
        box = browser.find_element(By.ID, "key-input")
        q = browser.find_element(By.ID, "q")
        assert not key_form.is_displayed()
        # Thumbnails the browser has begun to fetch finish before the session ends below
        # (else they fail with 401, as they should, but as console errors of this test).
        wait(browser, fetches_done)

        # A session that ends while the page is open (expiry): the next search asks again.
        browser.delete_all_cookies()
        q.clear()
        q.send_keys("a blue square", Keys.ENTER)
        wait(browser, lambda d: key_form.is_displayed() and idle(d))
        assert "API key" in status(browser) and focused(browser) == "input#key-input"
        assert not browser.find_element(By.ID, "session-bar").is_displayed()
        assert message.text == "" and box.get_attribute("value") == ""
        box.send_keys(PRIVATE_KEY, Keys.ENTER)
        wait_results(browser)
        wait_thumbnails_loaded(browser, 2)
        wait(browser, fetches_done)

        # "Forget key" ends the session: results go, the form is back, the API says 401.
        browser.find_element(By.ID, "key-forget").click()
        wait(browser, lambda d: key_form.is_displayed() and result_count(d) == 0)
        assert browser.get_cookie("clipsearch_session") is None
        answer = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/search?q=x').then(r => done(r.status));""")
        assert answer == 401
        # A thumbnail the page lazily begins after the session ended is refused (401), as
        # it must be: the results were shown while the session lasted (checked above).
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
                  and "/api/search" not in e["message"] and "/api/session" not in e["message"]
                  and not ("/thumbnail" in e["message"] and "status of 401" in e["message"])]
        assert not errors, f"browser console errors: {errors}"
    finally:
        browser.delete_all_cookies()
