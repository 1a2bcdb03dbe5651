"""What an indexing job reports: progress while it runs, a summary when it ends."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class Progress:
    phase: str  # "scanning", "hashing", "embedding", "saving", "done"
    done: int = 0
    total: int = 0
    rate: float = 0.0  # files per second in this phase
    eta: float | None = None  # seconds


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    retried: int = 0  # unchanged skipped files read again (--retry-skipped)
    recovered: int = 0  # files skipped before and indexed now
    skipped: collections.Counter = field(default_factory=collections.Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), capped
    texts_added: int = 0
    ocr_read: int = 0  # images read by OCR after indexing (indexed before OCR was on)
    seconds: float = 0.0
    embedded_per_second: float = 0.0
    #: decoder processes used, and the share of the embedding time the encoder spent
    #: waiting for decoded pictures (0 when it never waited)
    decoder_workers: int = 0
    encoder_wait_share: float = 0.0
    interrupted: bool = False
    #: skipped files under the roots a setting or package might let in: reason, count, remedy
    recoverable: list[dict] = field(default_factory=list)

    MAX_LISTED = 1000

    def skip(self, path: str, reason: str | None) -> None:
        """Count a skipped file under its reason's category and list it (capped)."""
        reason = reason or "unknown"
        self.skipped[reason_category(reason)] += 1
        if len(self.skipped_files) < self.MAX_LISTED:
            self.skipped_files.append((path, reason))

    def to_dict(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved,
            "removed": self.removed, "unchanged": self.unchanged, "retried": self.retried,
            "recovered": self.recovered,
            "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
            "texts_added": self.texts_added, "ocr_read": self.ocr_read, "seconds": round(self.seconds, 3),
            "embedded_per_second": round(self.embedded_per_second, 2),
            "decoder_workers": self.decoder_workers,
            "encoder_wait_share": round(self.encoder_wait_share, 3),
            "interrupted": self.interrupted, "recoverable": list(self.recoverable),
        }


def reason_category(reason: str) -> str:
    """The part of a skip reason that groups files ("unsupported format", "corrupt", ...)."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()
