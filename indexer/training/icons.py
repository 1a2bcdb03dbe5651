"""Named pictures from Debian icon themes: freedesktop icon names that depict a thing.

Icon themes draw the same freedesktop names (``audio-headphones``,
``weather-storm``, ``face-smile``) each in their own style, so every theme
adds new drawings of the same concepts. Most icons are abstract interface
glyphs (arrows, alignment, MIME badges) or application logos; only the names
in :data:`CAPTIONS`, a curated table of icons that show a nameable object,
weather, face or place, are used, each with the English caption written
here. For each name the largest PNG (at most 256 px) a theme ships is read;
themes without PNGs (SVG-only themes) are not used, which keeps the data
independent of an SVG renderer's version.
"""
from __future__ import annotations

import logging
import os
import re

from search.errors import DependencyMissing

from .gcompris import NamedPicture
from .raster import to_bitmap

log = logging.getLogger(__name__)

#: theme -> (Debian package, root folder holding ``NxN/<context>/`` subfolders)
THEMES: dict[str, tuple[str, str]] = {
    "oxygen": ("oxygen-icon-theme", "/usr/share/icons/oxygen/base"),
    "gnome": ("gnome-icon-theme", "/usr/share/icons/gnome"),
    "tango": ("tango-icon-theme", "/usr/share/icons/Tango"),
    "adwaita": ("adwaita-icon-theme", "/usr/share/icons/Adwaita"),
}
MAX_ICON_SIZE = 256

#: icon name -> caption (the thing it shows)
CAPTIONS: dict[str, str] = {
    # devices
    "audio-card": "sound card", "audio-headphones": "headphones", "audio-headset": "headset",
    "audio-input-microphone": "microphone", "audio-microphone": "microphone",
    "audio-speakers": "loudspeakers", "battery": "battery", "camera": "camera",
    "camera-photo": "photo camera", "camera-video": "video camera", "camera-web": "webcam",
    "computer": "computer", "computer-laptop": "laptop computer", "drive-harddisk": "hard disk drive",
    "drive-optical": "optical disc drive", "drive-removable-media-usb-pendrive": "usb stick",
    "input-gaming": "game controller", "input-keyboard": "keyboard", "input-mouse": "computer mouse",
    "input-tablet": "graphics tablet", "input-dialpad": "dial pad", "media-floppy": "floppy disk",
    "media-optical": "compact disc", "media-flash": "memory card", "media-tape": "cassette tape",
    "multimedia-player": "portable media player", "phone": "telephone", "printer": "printer",
    "scanner": "scanner", "video-display": "computer monitor", "pda": "handheld computer",
    "modem": "modem", "network-wired": "network cable", "gnome-dev-floppy": "floppy disk",
    "gnome-dev-keyboard": "keyboard", "gnome-dev-mouse-ball": "computer mouse",
    "gnome-dev-mouse-optical": "computer mouse", "gnome-dev-printer": "printer",
    "gnome-dev-dvd": "dvd disc", "gnome-dev-battery": "battery", "gnome-dev-computer": "computer",
    "gnome-joystick": "joystick", "joystick": "joystick", "gnome-globe": "globe",
    "media-flash-memory-stick": "memory stick", "media-flash-sd-mmc": "sd memory card",
    "cpu": "computer chip", "network-server": "server computer", "video-television": "television",
    "smartphone": "smartphone", "camera-photo-symbolic": "photo camera",
    # places
    "folder": "folder", "user-home": "house", "go-home": "house", "user-trash": "trash can",
    "user-trash-full": "full trash can", "gnome-fs-trash-full": "full trash can",
    "gnome-fs-trash-empty": "trash can", "folder-music": "music folder",
    "folder-pictures": "pictures folder", "folder-videos": "videos folder",
    "user-desktop": "desktop computer", "network-workgroup": "networked computers",
    # weather and status
    "weather-clear": "sun in a clear sky", "weather-clear-night": "moon at night",
    "weather-few-clouds": "sun behind a cloud", "weather-few-clouds-night": "moon behind a cloud",
    "weather-overcast": "clouds", "weather-showers": "rain cloud",
    "weather-showers-scattered": "light rain", "weather-snow": "snow cloud",
    "weather-storm": "thunderstorm", "weather-fog": "fog", "weather-severe-alert": "severe weather",
    "weather-clouds": "clouds", "weather-hail": "hail", "weather-freezing-rain": "freezing rain",
    "weather-many-clouds": "many clouds", "weather-mist": "mist",
    "dialog-warning": "warning sign", "dialog-error": "error sign",
    "dialog-information": "information sign", "dialog-question": "question mark",
    "battery-low": "low battery", "battery-full": "full battery", "battery-empty": "empty battery",
    "battery-caution": "battery warning", "audio-volume-high": "loudspeaker",
    "audio-volume-muted": "muted loudspeaker", "security-high": "shield", "changes-prevent": "padlock",
    "mail-unread": "sealed envelope", "mail-read": "open envelope",
    # emotes
    "face-angel": "angel face", "face-angry": "angry face", "face-cool": "face with sunglasses",
    "face-crying": "crying face", "face-devilish": "devil face",
    "face-embarrassed": "embarrassed face", "face-glasses": "face with glasses",
    "face-grin": "grinning face", "face-kiss": "kissing face", "face-laugh": "laughing face",
    "face-monkey": "monkey face", "face-plain": "neutral face",
    "face-raspberry": "face sticking out its tongue", "face-sad": "sad face", "face-sick": "sick face",
    "face-smile": "smiling face", "face-smile-big": "face with a big smile",
    "face-smirk": "smirking face", "face-surprise": "surprised face", "face-tired": "tired face",
    "face-uncertain": "uncertain face", "face-wink": "winking face", "face-worried": "worried face",
    "emote-love": "red heart",
    # applications and actions that draw an object
    "accessories-calculator": "calculator", "accessories-dictionary": "dictionary book",
    "office-calendar": "calendar", "x-office-calendar": "calendar", "appointment-new": "calendar",
    "clock": "clock", "internet-mail": "envelope", "mail-message-new": "letter",
    "internet-web-browser": "globe", "applications-games": "game controller",
    "preferences-desktop-keyboard": "keyboard", "preferences-desktop-font": "letters",
    "office-address-book": "address book", "x-office-address-book": "address book",
    "edit-cut": "scissors", "edit-paste": "clipboard", "edit-find": "magnifying glass",
    "system-search": "magnifying glass", "document-print": "printer", "document-save": "floppy disk",
    "system-lock-screen": "padlock", "call-start": "telephone handset",
    "mail-attachment": "paper clip", "insert-image": "picture", "insert-link": "chain link",
    "audio-x-generic": "musical note", "image-x-generic": "picture", "video-x-generic": "film strip",
    "text-x-generic": "text document", "package-x-generic": "cardboard box",
    "x-office-document": "document", "x-office-spreadsheet": "spreadsheet",
    "x-office-presentation": "presentation chart", "emblem-favorite": "star",
    "emblem-important": "exclamation mark", "emblem-photos": "photos", "emblem-mail": "envelope",
    "emblem-package": "cardboard box", "emblem-system": "gear", "emblem-web": "globe",
    "applications-science": "laboratory flask", "applications-graphics": "paint brush",
    "applications-multimedia": "film and music", "applications-office": "office documents",
    "help-browser": "lifebuoy", "utilities-terminal": "computer terminal",
    "system-users": "group of people", "user-info": "person", "contact-new": "person",
    "preferences-desktop-wallpaper": "wallpaper picture", "media-playback-start": "play button",
    "media-record": "record button", "system-shutdown": "power button", "bookmarks": "bookmark",
    "view-calendar": "calendar", "games-highscores": "trophy", "flag": "flag",
    "tools-check-spelling": "spell check", "format-text-bold": "bold letter",
}
_SIZE_DIR = re.compile(r"^(\d+)x\1$")


def require_installed(themes=tuple(THEMES)) -> None:
    """Raise :class:`DependencyMissing` naming the package of each absent theme."""
    missing = [THEMES[t][0] for t in themes if not os.path.isdir(THEMES[t][1])]
    if missing:
        raise DependencyMissing(f"icon themes not found; install the Debian package(s) "
                                f"{' '.join(missing)} (apt-get install {' '.join(missing)})")


def _best_files(root: str) -> dict[str, str]:
    """Icon name -> path of its largest PNG (<= MAX_ICON_SIZE) under ``root``."""
    best: dict[str, tuple[int, str]] = {}
    for size_dir in sorted(os.listdir(root)):
        m = _SIZE_DIR.match(size_dir)
        if not m or int(m.group(1)) > MAX_ICON_SIZE:
            continue
        size = int(m.group(1))
        for dirpath, _dirs, files in sorted(os.walk(os.path.join(root, size_dir))):
            for f in sorted(files):
                name = f[:-4]
                if f.endswith(".png") and name in CAPTIONS and not os.path.islink(
                        os.path.join(dirpath, f)) and size > best.get(name, (0, ""))[0]:
                    best[name] = (size, os.path.join(dirpath, f))
    return {n: p for n, (_s, p) in best.items()}


def load_pictures(themes=tuple(THEMES)) -> list[NamedPicture]:
    """Curated icons of ``themes``, keyed ``icons:<theme>/<name>``, sorted by key.

    Symbolic links are skipped, so an icon that a theme draws once under
    several names counts once.
    """
    require_installed(themes)
    out = []
    for theme in themes:
        for name, path in sorted(_best_files(THEMES[theme][1]).items()):
            with open(path, "rb") as f:
                image = to_bitmap(f.read(), path)
            if image is not None and min(image.size) >= 8:
                out.append(NamedPicture(f"icons:{theme}/{name}", CAPTIONS[name], image))
    out.sort(key=lambda p: p.key)
    log.info("read %d icons from %d themes", len(out), len(themes))
    return out
