"""Screenshot of the search page of a running clipsearch server, for the README.

    clipsearch demo &                       # or: clipsearch serve, over any index
    python bench/page_screenshot.py --url http://127.0.0.1:8000 --query "a red heart"

Drives Debian's headless Chromium (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``)
through Selenium, types the query, waits until the thumbnails in view have loaded
and writes a PNG of the given size (default 1280x800, ``docs/screenshot.png``).
``tests/test_page_browser.py`` takes the same picture over its random-weight test
index; this script is for a picture of a real model's results.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMAGES_IN_VIEW_LOADED = """
    const imgs = Array.from(document.querySelectorAll('#results img'))
        .filter(i => i.getBoundingClientRect().top < window.innerHeight);
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) &&
        !document.getElementById('results').hasAttribute('aria-busy');
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the server")
    ap.add_argument("--query", default="a red heart", help="text to search for")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "screenshot.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for results")
    args = ap.parse_args(argv)

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    with tempfile.TemporaryDirectory(prefix="clipsearch-shot-") as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": args.width, "height": args.height, "deviceScaleFactor": 1,
                "mobile": False})
            driver.get(args.url.rstrip("/") + "/")
            driver.find_element(By.ID, "q").send_keys(args.query, Keys.ENTER)
            WebDriverWait(driver, args.timeout, poll_frequency=0.1).until(
                lambda d: d.execute_script(IMAGES_IN_VIEW_LOADED))
            driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            driver.save_screenshot(args.out)
            status = driver.find_element(By.ID, "status").text
        finally:
            driver.quit()
    sys.stdout.write(f"wrote {args.out}: {status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
