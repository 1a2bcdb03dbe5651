"""How a list of files is cut into units of distributed work."""
from __future__ import annotations

from search.ingest.discover import is_video_path


def shard_paths(paths: list[str], size: int) -> list[list[str]]:
    """Consecutive shards of at most ``size`` images; each video is a shard of its own (a
    video is the unit of work and of retry: its moments are made in one actor)."""
    shards: list[list[str]] = []
    run: list[str] = []
    for p in paths:
        if is_video_path(p):
            if run:
                shards.append(run)
                run = []
            shards.append([p])
            continue
        run.append(p)
        if len(run) >= size:
            shards.append(run)
            run = []
    if run:
        shards.append(run)
    return shards
