"""Image and text encoder: the only module that imports torch and open_clip.

An :class:`OpenClipEncoder` turns images and texts into ``(n, d)`` float32
L2-normalised numpy arrays. Models are named the open_clip way:

* a registry name plus a pretrained tag (``ViT-B-32`` + ``laion2b_s34b_b79k``),
  resolved from the local Hugging Face cache first; when the weights are not
  cached and the hub cannot be reached, :class:`ModelUnavailable` is raised at
  once with instructions instead of minutes of download retries;
* a registry name plus a local checkpoint file (identity: its sha256);
* a model-config JSON file (registered with ``open_clip.add_model_config``);
* ``clipsearch-mini``, the model bundled in ``search/models``;
* no pretrained weights (``pretrained=None``): random weights from a fixed
  seed, so that separate processes agree; meant for tests.

Image preprocessing is described by a small picklable :class:`Preprocess`
that decoder worker processes apply with Pillow alone, producing uint8
``(H, W, 3)`` arrays; the encoder turns batches of those into vectors. The same
function serves query images, so an indexed file searched by itself gives the
identical vector.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from .errors import BadRequest, ModelUnavailable
from .fileio import sha256_file

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0
RANDOM_WORDS = ("none", "random")
#: pretrained tag used when a registry model is named without one
DEFAULT_TAGS = {"ViT-B-32": "laion2b_s34b_b79k"}
#: Address probed (TCP connect) before weights that are not cached are downloaded; setting
#: ``hub_address`` (CLIPSEARCH_HUB_ADDRESS) overrides it.
DEFAULT_HUB_ADDRESS = "huggingface.co:443"


@dataclass(frozen=True)
class ModelIdentity:
    """What made a vector: stored with every index and checked on open."""

    name: str
    pretrained: str  # tag, "sha256:<hex>" of a checkpoint, or "random-init:<seed>"
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelIdentity":
        return cls(name=str(d["name"]), pretrained=str(d["pretrained"]), dim=int(d["dim"]))

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained}, dim {self.dim})"


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


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a (host, port) pair; BadRequest otherwise."""
    host, sep, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"hub address {address!r} must be HOST:PORT, e.g. {DEFAULT_HUB_ADDRESS}")
    return host, int(port)


def hub_reachable(address: str = DEFAULT_HUB_ADDRESS, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the model hub at ``address`` (``host:port``) opens."""
    try:
        with socket.create_connection(parse_address(address), timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_model_name(model: str) -> tuple[str, str | None]:
    """Return (open_clip model name, default checkpoint or None); registers configs."""
    import open_clip

    from . import models as bundled

    if model in bundled.BUNDLED:
        bundled.register(model)  # the config, with the text tower's local path filled in
        return model, bundled.BUNDLED[model][1]
    if model.endswith(".json"):
        if not os.path.isfile(model):
            raise ModelUnavailable(f"model config file {model!r} does not exist")
        open_clip.add_model_config(model)
        return os.path.splitext(os.path.basename(model))[0], None
    if model not in open_clip.list_models():
        raise ModelUnavailable(
            f"unknown open_clip model {model!r}; give a registry name (e.g. ViT-B-32), "
            f"'clipsearch-mini', or a model-config JSON file")
    return model, None


def _resolve_pretrained(name: str, pretrained: str, hub_address: str) -> tuple[str, str]:
    """Return (value to pass to open_clip, identity string) for a tag or file.

    A tag whose weights are not cached is downloaded only when ``hub_address`` answers."""
    import open_clip

    if os.path.isfile(pretrained):
        return pretrained, "sha256:" + sha256_file(pretrained)
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        raise ModelUnavailable(f"checkpoint file {pretrained!r} does not exist")
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelUnavailable(
            f"model {name!r} has no pretrained tag {pretrained!r}; known tags: "
            f"{', '.join(tags) or 'none'}; or give a local checkpoint file")
    hint = (f"The weights of {name} / {pretrained} are not in the local cache and the model hub "
            f"cannot be reached. Either give a local checkpoint file (--pretrained /path/to/"
            f"open_clip_model.safetensors, or CLIPSEARCH_PRETRAINED), or use the bundled offline "
            f"model (--model clipsearch-mini, or CLIPSEARCH_MODEL=clipsearch-mini).")
    hf_id = cfg.get("hf_hub", "")
    if hf_id:
        from huggingface_hub import hf_hub_download
        repo_id = "/".join(hf_id.rstrip("/").split("/")[:2])
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                return hf_hub_download(repo_id, fname, local_files_only=True), pretrained
            except Exception:  # not cached under this name
                continue
    if not hub_reachable(hub_address):
        raise ModelUnavailable(hint)
    return pretrained, pretrained


class OpenClipEncoder:
    """open_clip model wrapper. Thread-compatible for reading; one per process."""

    def __init__(self, model, tokenizer, preprocess: Preprocess, identity: ModelIdentity,
                 device: str):
        import torch

        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.identity = identity
        self.device = device
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean = mean.to(device)
        self._std = std.to(device)

    @property
    def dim(self) -> int:
        return self.identity.dim

    @classmethod
    def load(cls, model: str, pretrained: str | None = None, *, device: str | None = None,
             threads: int | None = None,
             hub_address: str = DEFAULT_HUB_ADDRESS) -> "OpenClipEncoder":
        """Load a model; raises :class:`ModelUnavailable` with instructions on failure.

        ``pretrained``: a tag, a checkpoint file, ``"none"`` for seeded random
        weights, or ``None`` for the model's default (bundled checkpoint, or
        :data:`DEFAULT_TAGS`). ``hub_address``: ``host:port`` probed before weights
        that are not cached are downloaded; when it does not answer the load fails at once.
        """
        try:
            import open_clip
            import torch
        except ImportError as e:  # pragma: no cover - install problem
            raise ModelUnavailable(f"torch/open_clip not installed: {e}") from e
        if threads:
            torch.set_num_threads(threads)
        from . import models as bundled

        name, bundled_ckpt = _resolve_model_name(model)
        if pretrained is None:  # the model's own default
            if bundled_ckpt is not None:
                pretrained = bundled_ckpt
            elif name in DEFAULT_TAGS:
                pretrained = DEFAULT_TAGS[name]
            else:
                raise ModelUnavailable(
                    f"model {name!r} needs --pretrained: a pretrained tag, a local checkpoint "
                    f"file, or 'none' for random weights")
        if pretrained.lower() in RANDOM_WORDS:
            pretrained = None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                net = open_clip.create_model(name, pretrained=None, device="cpu")
            ident = f"random-init:{RANDOM_INIT_SEED}"
        elif name in bundled.BUNDLED:
            # Its checkpoint holds only the trained image tower; the text tower comes from a package.
            if not os.path.isfile(pretrained):
                raise ModelUnavailable(f"checkpoint file {pretrained!r} does not exist")
            net, _, _ = bundled.create_bundled(name, device="cpu", checkpoint=pretrained)
            ident = "sha256:" + sha256_file(pretrained)
        else:
            source, ident = _resolve_pretrained(name, pretrained, hub_address)
            try:
                net = open_clip.create_model(name, pretrained=source, device="cpu")
            except Exception as e:
                raise ModelUnavailable(
                    f"could not load weights {pretrained!r} for {name}: {e}. Give a local checkpoint "
                    f"with --pretrained FILE or use --model clipsearch-mini") from None
        net = net.to(device).eval()
        pcfg = getattr(net.visual, "preprocess_cfg", {}) or {}
        size = pcfg.get("size", getattr(net.visual, "image_size", 224))
        if isinstance(size, (tuple, list)):
            size = size[0]
        prep = Preprocess(
            size=int(size),
            mean=tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD)),
            resize_mode=pcfg.get("resize_mode", "shortest"))
        tokenizer = open_clip.get_tokenizer(name)
        with torch.inference_mode():
            dim = int(net.encode_text(tokenizer(["probe"]).to(device)).shape[-1])
        identity = ModelIdentity(name=name, pretrained=ident, dim=dim)
        log.info("loaded model %s on %s", identity, device)
        return cls(net, tokenizer, prep, identity, device)

    # -- encoding -----------------------------------------------------------
    def _autocast(self):
        torch = self._torch
        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        import contextlib
        return contextlib.nullcontext()

    def _finish(self, feats) -> np.ndarray:
        out = feats.float().cpu().numpy().astype(np.float32, copy=False)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.maximum(norms, 1e-12, out=norms)
        return np.ascontiguousarray(out / norms, dtype=np.float32)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` from :class:`Preprocess` -> float32 ``(n, d)`` unit rows."""
        torch = self._torch
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise BadRequest(f"expected pixels of shape (n, H, W, 3), got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            with self._autocast():
                feats = self.model.encode_image(x)
        return self._finish(feats)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images (any mode) -> float32 ``(n, d)`` unit rows."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        arr = np.stack([self.preprocess(im.convert("RGB")) for im in images])
        return self.encode_pixels(arr)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Strings -> float32 ``(n, d)`` unit rows. Long texts are truncated by the tokenizer."""
        torch = self._torch
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
                with self._autocast():
                    parts.append(self._finish(self.model.encode_text(tokens)))
        return np.concatenate(parts)


def load_encoder(settings) -> OpenClipEncoder:
    """Build the encoder a :class:`~search.config.Settings` describes."""
    return OpenClipEncoder.load(settings.model, settings.pretrained, device=settings.device,
                                threads=settings.torch_threads, hub_address=settings.hub_address)
