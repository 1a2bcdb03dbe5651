"""The eager PyTorch encoder: the fp32 reference on CPU, fp32 or fp16 (autocast) on CUDA."""
from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import BadRequest
from .base import ModelIdentity, Preprocess, unit_rows
from .loading import DEFAULT_HUB_ADDRESS, LoadedModel, load_model

log = logging.getLogger(__name__)


class OpenClipEncoder:
    """open_clip model run by torch. Thread-compatible for reading; one per process."""

    def __init__(self, model, tokenizer, preprocess: Preprocess, identity: ModelIdentity,
                 device: str):
        import torch

        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self.fp16 = identity.precision == "fp16"
        if self.fp16 and not device.startswith("cuda"):
            raise BadRequest("precision fp16 needs a CUDA device")
        self.identity = identity
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean = mean.to(device)
        self._std = std.to(device)

    @property
    def dim(self) -> int:
        return self.identity.dim

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, precision: str = "fp32") -> "OpenClipEncoder":
        return cls(loaded.net, loaded.tokenizer, loaded.preprocess,
                   loaded.identity.with_precision(precision), loaded.device)

    @classmethod
    def load(cls, model: str, pretrained: str | None = None, *, device: str | None = None,
             threads: int | None = None, precision: str | None = None,
             hub_address: str = DEFAULT_HUB_ADDRESS) -> "OpenClipEncoder":
        """Load a model (see :func:`search.encoder.loading.load_model`).

        ``precision``: ``fp32`` or, on CUDA, ``fp16``; default fp16 on CUDA, fp32 on CPU.
        """
        loaded = load_model(model, pretrained, device=device, threads=threads,
                            hub_address=hub_address)
        if precision is None:
            precision = "fp16" if loaded.device.startswith("cuda") else "fp32"
        enc = cls.from_loaded(loaded, precision)
        log.info("loaded model %s on %s (torch)", enc.identity, enc.device)
        return enc

    # -- encoding -----------------------------------------------------------
    def _autocast(self):
        if self.fp16:
            return self._torch.autocast("cuda", dtype=self._torch.float16)
        return contextlib.nullcontext()

    def normalise(self, pixels: np.ndarray):
        """uint8 ``(n, H, W, 3)`` -> float32 ``(n, 3, H, W)`` tensor, mean/std applied."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` from :class:`Preprocess` -> float32 ``(n, d)`` unit rows."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise BadRequest(f"expected pixels of shape (n, H, W, 3), got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        with self._torch.inference_mode():
            x = self.normalise(pixels)
            with self._autocast():
                feats = self.model.encode_image(x)
        return unit_rows(feats.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images (any mode) -> float32 ``(n, d)`` unit rows."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        arr = np.stack([self.preprocess(im.convert("RGB")) for im in images])
        return self.encode_pixels(arr)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Strings -> float32 ``(n, d)`` unit rows. Long texts are truncated by the tokenizer."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        with self._torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
                with self._autocast():
                    feats = self.model.encode_text(tokens)
                parts.append(unit_rows(feats.float().cpu().numpy()))
        return np.concatenate(parts)
