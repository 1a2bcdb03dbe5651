"""Skipped files that a setting or an optional package might let in, counted by remedy.

A skipped file is not read again while it is unchanged; after raising
``CLIPSEARCH_MAX_PIXELS`` or installing pillow-heif, ``clipsearch index --retry-skipped``
reads the skipped files again. The summary of every run says how many skipped files
under its roots such a change might recover, and which change.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

from sqlalchemy import or_, select

from ..schema import STATUS_SKIPPED, MediaItem
from .discover import heif_available

_PIXELS = re.compile(r"(\d+) pixels")
RUN_RETRY = "run `clipsearch index --retry-skipped` (API: \"retry_skipped\": true)"
RETRY = "then " + RUN_RETRY


def recoverable(store, roots: Sequence[str], max_pixels: int, *, heif_passed_over: int = 0
                ) -> list[dict]:
    """``[{"reason", "count", "remedy"}]`` for the skipped files under ``roots`` that a
    setting or package change might index (or, the change made, a retry would), plus
    HEIC/HEIF files the walk passed over because pillow-heif is missing."""
    query = select(MediaItem.skip_reason).where(MediaItem.status == STATUS_SKIPPED)
    if roots:
        query = query.where(or_(*[MediaItem.path.startswith(r.rstrip(os.sep) + os.sep,
                                                            autoescape=True) for r in roots]))
    over, within, need = 0, 0, 0
    heif, memory, unreadable = 0, 0, 0
    with store.session() as s:
        for (reason,) in s.execute(query.execution_options(yield_per=2000)):
            reason = reason or ""
            if reason.startswith("too large"):
                m = _PIXELS.search(reason)
                if m and int(m.group(1)) > max_pixels:
                    over += 1
                    need = max(need, int(m.group(1)))
                elif m:
                    within += 1
            elif "HEIF" in reason or "AVIF" in reason:
                heif += 1
            elif reason.startswith("out of memory"):
                memory += 1
            elif reason.startswith("unreadable") and "ermission" in reason:
                unreadable += 1
    out = []
    if over:
        out.append({"reason": "too large", "count": over,
                    "remedy": f"raise CLIPSEARCH_MAX_PIXELS from {max_pixels} to at least "
                              f"{need}, {RETRY}"})
    if within:
        out.append({"reason": "too large for an earlier limit", "count": within,
                    "remedy": f"they fit CLIPSEARCH_MAX_PIXELS={max_pixels} now: {RUN_RETRY}"})
    if heif and heif_available():
        out.append({"reason": "HEIF/AVIF content", "count": heif,
                    "remedy": f"pillow-heif is installed now: {RUN_RETRY}"})
    elif heif:
        out.append({"reason": "HEIF/AVIF content", "count": heif,
                    "remedy": f"install pillow-heif (pip install 'clipsearch[heif]'), {RETRY}"})
    if heif_passed_over:
        out.append({"reason": "HEIC/HEIF files not read", "count": heif_passed_over,
                    "remedy": "install pillow-heif (pip install 'clipsearch[heif]'); the next "
                              "run indexes them"})
    if memory:
        out.append({"reason": "out of memory while decoding", "count": memory,
                    "remedy": f"fewer decoder processes (CLIPSEARCH_WORKERS) or more memory, "
                              f"{RETRY}"})
    if unreadable:
        out.append({"reason": "unreadable (permission denied)", "count": unreadable,
                    "remedy": f"make the files readable by the indexing user, {RETRY}"})
    return out
