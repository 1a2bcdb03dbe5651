"""Models bundled with clipsearch: name -> (open_clip config JSON, checkpoint file)."""
from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))

BUNDLED: dict[str, tuple[str, str]] = {}
if os.path.isfile(os.path.join(_HERE, "clipsearch-mini.json")):
    BUNDLED["clipsearch-mini"] = (os.path.join(_HERE, "clipsearch-mini.json"),
                                  os.path.join(_HERE, "clipsearch-mini.pt"))
