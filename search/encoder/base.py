"""What every encoder shares, without torch: identity, preprocessing, the interface.

:class:`Preprocess` is a small picklable description of open_clip's eval
transform that decoder worker processes apply with Pillow alone, producing
uint8 ``(H, W, 3)`` arrays; encoders turn batches of those into vectors. The
same function serves query images, so an indexed file searched by itself gives
the identical vector.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ModelIdentity:
    """What made a vector: stored with every index and checked on open."""

    name: str
    pretrained: str  # tag, "sha256:<hex>" of a checkpoint, or "random-init:<seed>"
    dim: int
    #: how the forward pass ran (:data:`search.encoder.precision.MODES`); vectors of one
    #: model in different precisions are comparable, so it does not decide compatibility
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelIdentity":
        return cls(name=str(d["name"]), pretrained=str(d["pretrained"]), dim=int(d["dim"]),
                   precision=str(d.get("precision", "fp32")))

    def same_model(self, other: "ModelIdentity") -> bool:
        """Same weights and dimension: vectors comparable whatever the precision of each."""
        return (self.name, self.pretrained, self.dim) == (other.name, other.pretrained, other.dim)

    def with_precision(self, precision: str) -> "ModelIdentity":
        return ModelIdentity(self.name, self.pretrained, self.dim, precision)

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained}, dim {self.dim}, {self.precision})"


@dataclass(frozen=True)
class Preprocess:
    """Picklable image preprocessing equal to open_clip's eval transform.

    Resize the shortest side to ``size`` (bicubic), centre-crop ``size`` x
    ``size``; mean/std normalisation happens later on the batch tensor.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"

    def prepare(self, img: Image.Image) -> Image.Image:
        """Cheaper decoding for JPEG: ask the decoder for a reduced scale >= size."""
        if img.format == "JPEG":
            img.draft("RGB", (self.size, self.size))
        return img

    def __call__(self, img: Image.Image) -> np.ndarray:
        """Return a uint8 array of shape (size, size, 3). ``img`` must already be RGB."""
        s = self.size
        w, h = img.size
        if self.resize_mode == "squash":
            img = img.resize((s, s), Image.BICUBIC)
        else:
            # torchvision's rule: the constrained side becomes exactly s, the other is truncated
            short_first = (w <= h) if self.resize_mode != "longest" else (w >= h)
            if short_first:
                nw, nh = s, max(1, int(s * h / w))
            else:
                nw, nh = max(1, int(s * w / h)), s
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BICUBIC)
            if self.resize_mode == "longest":
                canvas = Image.new("RGB", (s, s), (0, 0, 0))
                canvas.paste(img, ((s - nw) // 2, (s - nh) // 2))
                img = canvas
            else:
                left = int(round((nw - s) / 2.0))
                top = int(round((nh - s) / 2.0))
                img = img.crop((left, top, left + s, top + s))
        return np.asarray(img, dtype=np.uint8)


class Encoder(Protocol):
    identity: ModelIdentity
    preprocess: Preprocess

    @property
    def dim(self) -> int: ...

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def unit_rows(feats: np.ndarray) -> np.ndarray:
    """float32 C-contiguous rows scaled to unit length (zero rows stay zero)."""
    out = np.asarray(feats, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(out / norms, dtype=np.float32)
