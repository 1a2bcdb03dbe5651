#!/usr/bin/env python3
"""Container health check of the clipsearch web service (the image's HEALTHCHECK).

Exit 0 when ``GET /api/health`` answers 200 with ``{"status": "ok"}``, 1 otherwise,
printing why to stderr. The URL is the first argument, or
``http://127.0.0.1:$CLIPSEARCH_PORT/api/health`` (port 8000 by default).
Standard library only: the slim image has no curl.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request

TIMEOUT_S = 5.0


def main(argv: list[str]) -> int:
    port = os.environ.get("CLIPSEARCH_PORT") or "8000"
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{port}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            body = json.load(resp)
    except Exception as e:  # any failure to get a good answer means unhealthy
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    if not isinstance(body, dict) or body.get("status") != "ok":
        print(f"unhealthy: {url} answered {body!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
