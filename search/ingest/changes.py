"""What changed under the library roots since the store last saw them.

Unchanged files (same size and mtime as stored) cost one stat. New files whose content
hash equals that of a vanished item are moves: the row keeps its id and vector, only its
path changes (and its name words, in the same transaction). Vanished files that are not
moves leave the library (rows, sidecar captions, words and index ids, through one atomic
deletion).
"""
from __future__ import annotations

import collections
import logging
from typing import Callable

from sqlalchemy import update

from .. import keywords
from ..library import Library
from ..schema import (STATUS_INDEXED, STATUS_SKIPPED, FileState, MediaItem, TextEntry,
                      sidecar_source)
from ..segments import segment_ids_of
from .decode import hash_file
from .discover import FoundFile
from .summary import Progress, Summary
from .workers import WorkerPool, window_map

log = logging.getLogger(__name__)


def classify(found: dict[str, FoundFile], states: dict[str, FileState], summary: Summary, *,
             retry_skipped: bool = False) -> tuple[list[FoundFile], list[FileState]]:
    """``(files to embed: new or changed, stored states whose file vanished)``; counts the
    unchanged ones in ``summary``. ``retry_skipped``: files skipped before are read again
    even when unchanged (a setting or package may have changed since)."""
    to_embed = []
    for path, f in found.items():
        st = states.get(path)
        if st is not None and st.size == f.size and st.mtime == f.mtime:
            if retry_skipped and st.status == STATUS_SKIPPED:
                summary.retried += 1
                to_embed.append(f)
            else:
                summary.unchanged += 1
        else:
            to_embed.append(f)
    missing = [st for p, st in states.items() if p not in found]
    return to_embed, missing


def moves_and_removals(library: Library, pool: WorkerPool | None, to_embed: list[FoundFile],
                       missing: list[FileState], states: dict[str, FileState], *,
                       workers: int, summary: Summary,
                       progress: Callable[[Progress], None],
                       should_stop: Callable[[], bool] = lambda: False) -> list[FoundFile]:
    """Pair vanished items with new files of equal content (moves, kept with their ids);
    delete the rest. Returns the files still to embed.

    Once ``should_stop()`` is true hashing ends: the moves found so far are committed,
    nothing is deleted (an unhashed new file may be a vanished one moved) and the caller
    is expected to stop."""
    by_hash: dict[str, list[FileState]] = collections.defaultdict(list)
    for st in missing:
        if st.content_hash and st.status == STATUS_INDEXED:
            by_hash[st.content_hash].append(st)
    new_files = [f for f in to_embed if f.path not in states]
    moves: list[tuple[FileState, FoundFile]] = []
    if by_hash and new_files:
        progress(Progress("hashing", total=len(new_files)))
        window = max(16, workers * 8)
        for i, (path, digest) in enumerate(window_map(
                pool, hash_file, [f.path for f in new_files], window,
                on_crash=lambda p: (p, None), should_stop=should_stop)):
            if digest and by_hash.get(digest):
                moves.append((by_hash[digest].pop(), new_files[i]))
            if i % 500 == 0:
                progress(Progress("hashing", done=i, total=len(new_files)))
            if should_stop():
                break
    moved_paths = {f.path for _, f in moves}
    moved_ids = {st.id for st, _ in moves}
    gone = [st for st in missing if st.id not in moved_ids] if not should_stop() else []
    with library.store.session() as s:
        for st, f in moves:
            s.execute(update(MediaItem).where(MediaItem.id == st.id).values(
                path=f.path, root=f.root, size=f.size, mtime=f.mtime))
            s.execute(update(TextEntry).where(TextEntry.source == sidecar_source(st.path))
                      .values(source=sidecar_source(f.path)))
        keywords.refresh(s, [st.id for st, _ in moves])
        gone_segment_ids = segment_ids_of(s, [st.id for st in gone])
        gone_ids, gone_text_ids = library.store.delete_items_with_captions(
            [st.id for st in gone], session=s)
    library.forget_ids("images", gone_ids)
    library.forget_ids("texts", gone_text_ids)
    library.forget_ids("segments", gone_segment_ids)
    summary.moved += len(moves)
    summary.removed += len(gone)
    if moves or gone:
        log.info("%d moved or renamed, %d removed", len(moves), len(gone))
    return [f for f in to_embed if f.path not in moved_paths]
