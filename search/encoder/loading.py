"""Model resolution and loading with open_clip (torch imported inside functions).

Models are named the open_clip way:

* a registry name plus a pretrained tag (``ViT-B-32`` + ``laion2b_s34b_b79k``),
  resolved from the local Hugging Face cache first; when the weights are not
  cached and the hub cannot be reached, :class:`ModelUnavailable` is raised at
  once with instructions instead of minutes of download retries;
* a registry name plus a local checkpoint file (identity: its sha256);
* a model-config JSON file (registered with ``open_clip.add_model_config``);
* ``clipsearch-mini``, the model bundled in ``search/models``;
* no pretrained weights (``pretrained=None``): random weights from a fixed
  seed, so that separate processes agree; meant for tests.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, ModelUnavailable
from ..fileio import sha256_file
from .base import ModelIdentity, Preprocess

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0
RANDOM_WORDS = ("none", "random")
#: pretrained tag used when a registry model is named without one
DEFAULT_TAGS = {"ViT-B-32": "laion2b_s34b_b79k"}
#: Address probed (TCP connect) before weights that are not cached are downloaded; setting
#: ``hub_address`` (CLIPSEARCH_HUB_ADDRESS) overrides it.
DEFAULT_HUB_ADDRESS = "huggingface.co:443"


@dataclass
class LoadedModel:
    """An open_clip model in eval mode with what encoders need around it."""

    net: Any  # open_clip.CLIP (torch.nn.Module)
    tokenizer: Any
    preprocess: Preprocess
    identity: ModelIdentity  # precision "fp32": the encoder sets its own
    device: str


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

    from .. import models as bundled

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


def load_model(model: str, pretrained: str | None = None, *, device: str | None = None,
           threads: int | None = None, hub_address: str = DEFAULT_HUB_ADDRESS) -> LoadedModel:
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
    from .. import models as bundled

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
    return LoadedModel(net, tokenizer, prep, identity, device)
