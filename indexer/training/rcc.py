"""Reader for Qt binary resource files (``.rcc``), the way Debian's GCompris ships its pictures.

GCompris-qt packs every activity's files into one ``.rcc`` per activity
(``/usr/share/gcompris-qt/rcc/*.rcc``). The format is Qt's documented
resource layout: a ``qres`` header with the offsets of a tree of entries, a
names table (UTF-16) and a data table; a file's bytes are stored plainly or
zlib-compressed (Qt's ``qCompress``: a 4-byte length, then a zlib stream).
zstd-compressed entries (Qt 6) are reported, not read.
"""
from __future__ import annotations

import struct
import zlib

_COMPRESSED, _DIRECTORY, _ZSTD = 0x01, 0x02, 0x04


class RccError(ValueError):
    """The file is not a Qt resource file this reader understands."""


def read_rcc(path: str, want=None) -> dict[str, bytes]:
    """Files of the resource at ``path`` -> ``{"dir/name.ext": bytes}``.

    ``want``: optional predicate on the stored path; files it rejects are not
    decompressed. Raises :class:`RccError` for a file that is not an rcc.
    """
    with open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"qres":
        raise RccError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    entry_size = 14 if version == 1 else 22

    def name_at(off: int) -> str:
        (n,) = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        e = tree + index * entry_size
        name_off, flags = struct.unpack(">IH", b[e:e + 6])
        name = name_at(name_off) if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack(">II", b[e + 6:e + 14])
            child_prefix = f"{prefix}{name}/" if name else prefix
            stack.extend((first + c, child_prefix) for c in range(count))
            continue
        path_in = prefix + name
        if want is not None and not want(path_in):
            continue
        (data_off,) = struct.unpack(">I", b[e + 10:e + 14])
        (size,) = struct.unpack(">I", b[data + data_off:data + data_off + 4])
        raw = b[data + data_off + 4:data + data_off + 4 + size]
        if flags & _ZSTD:
            raise RccError(f"{path}: {path_in} is zstd-compressed, which this reader does not handle")
        out[path_in] = zlib.decompress(raw[4:]) if flags & _COMPRESSED else raw
    return out
