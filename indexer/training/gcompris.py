"""Named pictures from Debian's ``gcompris-qt-data``: drawings and photos of everyday things.

GCompris ships its activities as Qt resource files (:mod:`.rcc`). A curated
list of activities whose pictures show one nameable thing is read here; the
name comes from the activity's word list (``lang``: its ``words_sample.json``
gives an English description per picture) or from the file name
(``screwDriver2.webp`` -> "screwdriver", ``17_lion.svg`` -> "lion"), with a
short table of renames for French or abbreviated file names. Pictures that
show no single thing (backgrounds, maps, card backs, letters, digits) are
left out. Nothing is guessed: a file whose name is not understood is skipped.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from PIL import Image

from search.errors import DependencyMissing

from .raster import to_bitmap
from .rcc import read_rcc

log = logging.getLogger(__name__)

APT_PACKAGE = "gcompris-qt-data"
RCC_DIR = "/usr/share/gcompris-qt/rcc"
_IMAGE = re.compile(r"\.(svgz?|webp|png|jpe?g)$", re.I)

#: activity -> (path prefix inside the rcc, file stems to skip)
ACTIVITIES: dict[str, tuple[str, frozenset[str]]] = {
    "lang": ("gcompris/src/activities/lang/resource/words_sample/", frozenset()),
    "categorization": ("gcompris/src/activities/categorization/resource/images/",
                       frozenset({"background", "categorization", "numbers", "alphabets"})),
    "explore_farm_animals": ("gcompris/src/activities/explore_farm_animals/resource/animals/",
                             frozenset({"farm-animals", "question"})),
    "explore_world_animals": ("gcompris/src/activities/explore_world_animals/resource/animals/",
                              frozenset({"question"})),
    "instruments": ("gcompris/src/activities/instruments/resource/", frozenset({"background"})),
    "explore_monuments": ("gcompris/src/activities/explore_monuments/resource/",
                          frozenset({"key", "usa", "egypt", "india", "france", "germany", "wonders",
                                     "explore_monuments"})),
    "babymatch": ("gcompris/src/activities/babymatch/resource/images/",
                  frozenset({"sound", "light", "windflag5"})),
    "memory": ("gcompris/src/activities/memory/resource/",
               frozenset({"emptycard", "backcard", "background", "tux", "child", "greenbaby",
                          "bluebaby"})),
    "erase": ("gcompris/src/activities/erase/resource/",
              frozenset({"transparent_square", "transparent_square_green",
                         "transparent_square_yellow"})),
    "family": ("gcompris/src/activities/family/resource/", frozenset({"rings", "background"})),
}
#: subfolders of categorization that hold no single nameable thing
_SKIP_FOLDERS = frozenset({"alphabets", "numbers", "gcompris"})
#: file-name words -> English caption words
RENAMES = {
    "fusee": "rocket", "raquette": "tennis racket", "rape": "grater", "tuxhelico": "helicopter",
    "tuxplane": "airplane", "eggpot": "egg cup", "postpoint": "letter box",
    "sailingboat": "sailing boat", "fishingboat": "fishing boat", "flowerpot": "flower pot",
    "weighing machine": "weighing scale", "blackslate": "blackboard", "buffetset": "buffet set",
    "geothermal": "geothermal power plant", "solar": "solar panels", "windmill": "windmill",
    "cutting tool": "cutting tool", "screw driver": "screwdriver", "plier": "pliers",
    "tweezer": "tweezers", "flute traversiere": "flute", "chamaeleon": "chameleon",
    "gnu": "wildebeest", "bluebirds": "blue birds", "redbird": "red bird", "burj": "burj khalifa",
    "empire state": "empire state building", "zimni palace": "winter palace",
    "le musee": "louvre museum", "us capitol": "united states capitol", "monument": "monument",
    "old man": "old man", "baby boy": "baby boy", "football": "football", "fish": "fish",
    "spoons": "spoons", "erasers": "erasers", "kutub minar": "qutub minar",
    "india gate": "india gate", "great wall": "great wall of china",
    "great wallof china": "great wall of china",
}


@dataclass(frozen=True)
class NamedPicture:
    """A picture from a package: a stable key, its English name and the RGBA bitmap."""

    key: str
    name: str
    image: Image.Image


def words_of(stem: str) -> str:
    """``"screwDriver2"`` -> ``"screw driver"``; ``"17_lion"`` -> ``"lion"``; ``"polar_bear"``."""
    s = re.sub(r"^\d+_", "", stem)
    s = re.sub(r"\d+$", "", s)
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", s).replace("_", " ").replace("-", " ")
    # camelCase loses the case of joined particles: "statueofLiberty", "chateaudeChambord"
    s = re.sub(r"(?<=[a-z]{4})(of|de|du|des)(?= )", r" \1", s)
    return " ".join(s.lower().split())


def rcc_path(activity: str) -> str:
    return os.path.join(RCC_DIR, f"{activity}.rcc")


def require_installed() -> None:
    """Raise :class:`DependencyMissing` naming the package when GCompris' data is absent."""
    missing = [a for a in ACTIVITIES if not os.path.isfile(rcc_path(a))]
    if missing:
        raise DependencyMissing(
            f"GCompris pictures not found ({rcc_path(missing[0])} and {len(missing) - 1} more);"
            f" install the Debian package {APT_PACKAGE} "
            f"(apt-get install --no-install-recommends {APT_PACKAGE})")


def _lang_names(files: dict[str, bytes]) -> dict[str, str]:
    """words_sample image file -> English description, from the activity's own word list."""
    sample = files.get("gcompris/src/activities/lang/resource/words_sample.json")
    if sample is None:
        return {}
    names = {}
    for chapter in json.loads(sample):
        for lesson in chapter.get("content", []):
            for word in lesson.get("content", []):
                names[word["image"]] = word["description"]
    return names


def load_pictures() -> list[NamedPicture]:
    """Every curated GCompris picture, sorted by key (a stable order)."""
    require_installed()
    out = []
    for activity, (prefix, skip) in ACTIVITIES.items():
        files = read_rcc(rcc_path(activity),
                         want=lambda p, pre=prefix: p.startswith(pre) and bool(_IMAGE.search(p))
                         or p.endswith("words_sample.json"))
        lang = _lang_names(files) if activity == "lang" else {}
        for path in sorted(files):
            if not path.startswith(prefix) or not _IMAGE.search(path):
                continue
            rel = path[len(prefix):]
            folder, _, fname = rel.rpartition("/")
            stem = _IMAGE.sub("", fname)
            if stem in skip or words_of(stem).replace(" ", "") in skip or (folder and folder.split("/")[0] in _SKIP_FOLDERS):
                continue
            if activity == "lang":
                name = lang.get(fname)
                if name is None:
                    continue
            else:
                name = words_of(stem)
                name = RENAMES.get(name, name)
            if not name or not re.fullmatch(r"[a-z][a-z '\-]*", name):
                continue
            image = to_bitmap(files[path], fname)
            if image is not None:
                out.append(NamedPicture(f"gcompris:{activity}/{rel}", name, image))
    out.sort(key=lambda p: p.key)
    log.info("read %d GCompris pictures from %s", len(out), RCC_DIR)
    return out
