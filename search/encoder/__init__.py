"""Image and text encoders: with search.models, the only code that imports torch/open_clip.

An encoder turns images and texts into ``(n, d)`` float32 L2-normalised numpy
arrays and follows :class:`Encoder`. Two implementations:

* :class:`OpenClipEncoder` (:mod:`.torch_encoder`): eager PyTorch, fp32 on the CPU
  (the reference), fp32 or fp16 on CUDA;
* :class:`~.openvino_encoder.OpenVinoEncoder`: the faster CPU modes ``fp32-ov``,
  ``bf16`` and ``int8``, converted from the same open_clip model (optional extra
  ``clipsearch[openvino]``).

:func:`load_encoder` builds the one a :class:`~search.config.Settings` asks for;
``CLIPSEARCH_PRECISION`` picks the mode (:mod:`.precision`). Modules:
:mod:`.base` (identity, preprocessing, interface; no torch), :mod:`.loading`
(model names and weights), :mod:`.calibration` (the int8 calibration set).
Torch is imported inside functions only, so decoder processes that import
:class:`Preprocess` stay light.
"""
from __future__ import annotations

import logging
import os

from .base import Encoder, ModelIdentity, Preprocess, unit_rows
from .loading import (DEFAULT_HUB_ADDRESS, DEFAULT_TAGS, RANDOM_INIT_SEED, hub_reachable,
                      load_model, parse_address)
from .torch_encoder import OpenClipEncoder

log = logging.getLogger(__name__)

__all__ = ["Encoder", "ModelIdentity", "Preprocess", "OpenClipEncoder", "load_encoder",
           "build_encoder", "available_modes", "unit_rows", "DEFAULT_TAGS", "RANDOM_INIT_SEED",
           "load_model", "DEFAULT_HUB_ADDRESS", "hub_reachable", "parse_address"]


def available_modes(device: str) -> set[str]:
    """Precision modes this machine can run on ``device``."""
    from . import openvino_encoder as ovx

    if device.startswith("cuda"):
        return {"fp32", "fp16"}
    modes = {"fp32"}
    if ovx.available():
        modes.add("fp32-ov")
        if ovx.int8_available():
            modes.add("int8")
        if "BF16" in ovx.cpu_capabilities():
            modes.add("bf16")
    return modes


def build_encoder(model: str, pretrained: str | None = None, *, precision: str = "auto",
                  device: str | None = None, threads: int | None = None,
                  cache_dir: str | None = None, table: dict | None = None,
                  hub_address: str = DEFAULT_HUB_ADDRESS):
    """Load ``model`` and return the encoder of the chosen precision mode.

    ``cache_dir``: where converted OpenVINO models are kept (needed for fp32-ov/bf16/int8;
    default: a ``clipsearch`` folder in the user's cache). ``table``: a fidelity
    table instead of the shipped one (tests).
    """
    from . import precision as prec

    prec.check_mode(precision)
    loaded = load_model(model, pretrained, device=device, threads=threads,
                        hub_address=hub_address)
    mode = prec.choose(precision, loaded.identity, loaded.device,
                       available=available_modes(loaded.device), table=table)
    if mode in ("fp32", "fp16"):
        enc = OpenClipEncoder.from_loaded(loaded, mode)
    else:
        from .openvino_encoder import OpenVinoEncoder

        if cache_dir is None:
            cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "clipsearch")
        enc = OpenVinoEncoder.build(loaded, mode, cache_dir, threads=threads)
    log.info("loaded model %s on %s (precision %s requested)", enc.identity, loaded.device,
             precision)
    return enc


def load_encoder(settings, *, device: str | None = None, threads: int | None = None):
    """Build the encoder a :class:`~search.config.Settings` describes."""
    return build_encoder(settings.model, settings.pretrained, precision=settings.precision,
                         device=device or settings.device,
                         threads=threads or settings.torch_threads,
                         cache_dir=settings.cache_dir, hub_address=settings.hub_address)
