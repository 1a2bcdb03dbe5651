"""The OpenVINO encoder: the faster CPU modes ``fp32-ov``, ``bf16`` and ``int8``.

Both towers of the open_clip model (``encode_image``, ``encode_text``) are
converted from the loaded torch model itself with ``openvino.convert_model``
(traced, never re-implemented), so whatever open_clip builds is what runs.

* ``fp32-ov``: the converted fp32 graph compiled with f32 inference precision (OpenVINO
  would otherwise run bf16 on CPUs that have it): the same arithmetic with OpenVINO's
  fusions, ~1.2x eager PyTorch on the benchmark CPU;
* ``bf16``: the converted fp32 graph compiled with OpenVINO's bf16 inference
  precision; offered only on CPUs that compute bf16 natively (AVX512_BF16 or AMX).
* ``int8``: static post-training quantization by NNCF (OpenVINO's own quantizer):
  per-channel int8 weights, int8 activations calibrated on
  :mod:`.calibration`; transformer towers with NNCF's transformer recipe
  (SmoothQuant, sensitive operations such as softmax and layer norms kept in
  floating point).

The uint8 NHWC pixels of :class:`~.base.Preprocess` go in as they are: the
mean/std normalisation and the layout change are compiled into the image graph.
Converted (and quantized) models are cached as OpenVINO IR under
``cache_dir/openvino/`` keyed by the model identity, the mode, the calibration
set's version and the OpenVINO/NNCF versions: the first load of a mode converts
(tens of seconds; a minute or more for int8), later loads read the IR.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import BadRequest, ModelUnavailable
from . import calibration
from .base import ModelIdentity, Preprocess, unit_rows
from .loading import LoadedModel
from .precision import CPU_MODES

log = logging.getLogger(__name__)

MODES = CPU_MODES  # the modes this encoder runs: precision.py names them once
INSTALL_HINT = "pip install 'clipsearch[openvino]' (openvino and nncf)"
CALIBRATION_BATCH = 16


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def int8_available() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_capabilities() -> frozenset[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (e.g. FP32, BF16, INT8); empty without it."""
    if not available():
        return frozenset()
    import openvino as ov

    try:
        return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # pragma: no cover - no CPU plugin
        return frozenset()


def _cache_key(identity: ModelIdentity, mode: str, preprocess: Preprocess, ctx: int) -> str:
    import openvino as ov

    versions = {"openvino": ov.__version__, "calibration": calibration.VERSION}
    if mode == "int8":
        import nncf
        versions["nncf"] = nncf.__version__
    blob = json.dumps([identity.name, identity.pretrained, identity.dim, mode,
                       list(preprocess.mean), list(preprocess.std), preprocess.size, ctx,
                       versions], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _is_transformer(module) -> bool:
    return any(type(m).__name__ in ("Transformer", "BertModel", "ResidualAttentionBlock")
               or "Attention" in type(m).__name__ for m in module.modules())


def _convert(loaded: LoadedModel, mode: str):
    """(image model, text model) as OpenVINO models, quantized for int8."""
    import openvino as ov
    import torch

    net = loaded.net.float().cpu()
    size = loaded.preprocess.size
    calib_pixels = calibration.images(size)
    mean = torch.tensor(loaded.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocess.std).view(1, 3, 1, 1)

    def normalised(pix: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(pix).permute(0, 3, 1, 2).float().div(255.0)
        return ((x - mean) / std).numpy()

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.encode_image(x)

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, tokens):
            return self.net.encode_text(tokens)

    calib_tokens = loaded.tokenizer(calibration.texts())
    ctx = int(calib_tokens.shape[1])
    with torch.no_grad():
        image = ov.convert_model(ImageTower().eval(),
                                 example_input=torch.from_numpy(normalised(calib_pixels[:2])),
                                 input=[(-1, 3, size, size)])
        text = ov.convert_model(TextTower().eval(), example_input=calib_tokens[:2],
                                input=[((-1, ctx), ov.Type.i64)])
    if mode == "int8":
        import nncf

        def dataset(batches):
            return nncf.Dataset(batches)

        img_batches = [normalised(calib_pixels[i:i + CALIBRATION_BATCH])
                       for i in range(0, len(calib_pixels), CALIBRATION_BATCH)]
        txt = calib_tokens.numpy()
        txt_batches = [txt[i:i + CALIBRATION_BATCH] for i in range(0, len(txt), CALIBRATION_BATCH)]
        transformer = nncf.ModelType.TRANSFORMER
        image = nncf.quantize(image, dataset(img_batches), subset_size=len(img_batches),
                              model_type=transformer if _is_transformer(net.visual) else None)
        text = nncf.quantize(text, dataset(txt_batches), subset_size=len(txt_batches),
                             model_type=transformer)
    return image, text, ctx


def _with_pixel_preprocessing(model, preprocess: Preprocess):
    """Let the image graph take uint8 NHWC pixels; normalisation runs inside it."""
    from openvino import Layout, Type
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
    inp.model().set_layout(Layout("NCHW"))
    inp.preprocess().convert_element_type(Type.f32) \
        .mean([255.0 * m for m in preprocess.mean]).scale([255.0 * s for s in preprocess.std])
    return ppp.build()


def _cached_models(loaded: LoadedModel, mode: str, cache_dir: str):
    """(image, text, context length) read from the IR cache, converting on a miss."""
    import openvino as ov

    ctx_probe = int(loaded.tokenizer(["probe"]).shape[1])
    key = _cache_key(loaded.identity, mode, loaded.preprocess, ctx_probe)
    folder = os.path.join(cache_dir, "openvino", f"{loaded.identity.name}-{mode}-{key}")
    core = ov.Core()
    if os.path.isfile(os.path.join(folder, "done.json")):
        log.info("reading the converted %s model from %s", mode, folder)
        return (core.read_model(os.path.join(folder, "image.xml")),
                core.read_model(os.path.join(folder, "text.xml")), ctx_probe)
    log.info("converting %s to OpenVINO %s (once; cached in %s)", loaded.identity.name, mode,
             folder)
    image, text, ctx = _convert(loaded, mode)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(folder))
    try:
        ov.save_model(image, os.path.join(tmp, "image.xml"), compress_to_fp16=False)
        ov.save_model(text, os.path.join(tmp, "text.xml"), compress_to_fp16=False)
        with open(os.path.join(tmp, "done.json"), "w", encoding="utf-8") as f:
            json.dump({"identity": loaded.identity.to_dict(), "mode": mode}, f)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return image, text, ctx


class OpenVinoEncoder:
    """Both towers compiled by OpenVINO for the CPU. Thread-safe (a lock per tower)."""

    def __init__(self, image_model, text_model, tokenizer, preprocess: Preprocess,
                 identity: ModelIdentity, *, threads: int | None = None):
        import openvino as ov

        mode = identity.precision
        config = {"INFERENCE_PRECISION_HINT": "bf16" if mode == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.identity = identity
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = "cpu"
        self._image = core.compile_model(_with_pixel_preprocessing(image_model, preprocess),
                                         "CPU", config).create_infer_request()
        self._text = core.compile_model(text_model, "CPU", config).create_infer_request()
        self._image_lock = threading.Lock()
        self._text_lock = threading.Lock()

    @classmethod
    def build(cls, loaded: LoadedModel, mode: str, cache_dir: str, *,
              threads: int | None = None) -> "OpenVinoEncoder":
        if mode not in MODES:
            raise BadRequest(f"OpenVINO precision must be one of {', '.join(MODES)}, not {mode!r}")
        if not available():
            raise ModelUnavailable(f"precision {mode} needs OpenVINO: {INSTALL_HINT}")
        if mode == "bf16" and "BF16" not in cpu_capabilities():
            raise BadRequest("precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX); "
                             "use int8 or fp32")
        if mode == "int8" and not int8_available():
            raise ModelUnavailable(f"precision int8 needs NNCF: {INSTALL_HINT}")
        if not loaded.device.startswith("cpu"):
            raise BadRequest(f"precision {mode} runs on the CPU; the device is {loaded.device}")
        image, text, _ = _cached_models(loaded, mode, cache_dir)
        return cls(image, text, loaded.tokenizer, loaded.preprocess,
                   loaded.identity.with_precision(mode), threads=threads)

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` from :class:`Preprocess` -> float32 ``(n, d)`` unit rows."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise BadRequest(f"expected pixels of shape (n, H, W, 3), got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = np.ascontiguousarray(pixels, dtype=np.uint8)
        with self._image_lock:
            out = self._image.infer({0: x})[0]
            return unit_rows(out)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im.convert("RGB")) for im in images]))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).numpy().astype(np.int64, copy=False)
            with self._text_lock:
                parts.append(unit_rows(self._text.infer({0: tokens})[0]))
        return np.concatenate(parts)
