"""Terminal progress for indexing jobs: a tqdm bar with files per second and ETA."""
from __future__ import annotations

import sys

from tqdm import tqdm

from search.ingest.summary import Progress


class TerminalProgress:
    """Callable receiving :class:`Progress` updates; draws one bar per phase on stderr."""

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self._bar: tqdm | None = None
        self._phase: str | None = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.phase != self._phase:
            self.close()
            self._phase = p.phase
            if p.phase in ("done", "saving"):
                if p.phase == "saving":
                    print("saving index...", file=sys.stderr)
                return
            self._bar = tqdm(total=p.total or None, desc=p.phase, unit="file",
                             file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        bar = self._bar
        if bar is None:
            return
        if p.total and bar.total != p.total:
            bar.total = p.total
        if p.done > bar.n:
            bar.update(p.done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
