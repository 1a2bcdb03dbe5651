"""Encoder tests with a tiny open_clip config and seeded random weights."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import closed_port
from PIL import Image

from search.encoder import ModelIdentity, OpenClipEncoder, Preprocess
from search.errors import BadRequest, ModelUnavailable

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")


@pytest.fixture(scope="module")
def enc():
    return OpenClipEncoder.load(TINY, "none", device="cpu")


def test_identity_and_shapes(enc):
    assert enc.identity == ModelIdentity("tiny-clip", "random-init:0", 32)
    t = enc.encode_texts(["a cat", "a dog", "x" * 5000])
    assert t.shape == (3, 32) and t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    ims = [Image.new("RGB", (50, 30), (255, 0, 0)), Image.new("L", (20, 90), 7),
           Image.new("RGBA", (33, 33), (0, 0, 255, 128))]
    v = enc.encode_images(ims)
    assert v.shape == (3, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert enc.encode_texts([]).shape == (0, 32)
    assert enc.encode_images([]).shape == (0, 32)


def test_random_init_is_reproducible_across_loads(enc):
    other = OpenClipEncoder.load(TINY, "none", device="cpu")
    np.testing.assert_array_equal(enc.encode_texts(["same"]), other.encode_texts(["same"]))


def test_batches_agree_with_single_items(enc):
    texts = [f"text number {i}" for i in range(10)]
    np.testing.assert_allclose(enc.encode_texts(texts, batch_size=3), enc.encode_texts(texts),
                               atol=1e-5)


def test_preprocess_matches_open_clip_eval_transform(enc):
    import open_clip

    _, _, val = open_clip.create_model_and_transforms("tiny-clip", pretrained=None)
    rng = np.random.default_rng(0)
    for w, h in ((97, 41), (32, 32), (20, 180)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = val(img).numpy()
        ours = enc.preprocess(img).astype(np.float32) / 255.0
        ours = (ours - np.array(enc.preprocess.mean)) / np.array(enc.preprocess.std)
        np.testing.assert_allclose(ours.transpose(2, 0, 1), ref, atol=1e-5)


def test_preprocess_is_picklable():
    import pickle

    p = Preprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pickle.loads(pickle.dumps(p)) == p


def test_local_checkpoint_file(tmp_path, enc):
    ckpt = tmp_path / "tiny.pt"
    torch.save(enc.model.state_dict(), ckpt)
    loaded = OpenClipEncoder.load(TINY, str(ckpt), device="cpu")
    assert loaded.identity.pretrained.startswith("sha256:") and len(loaded.identity.pretrained) == 71
    np.testing.assert_allclose(loaded.encode_texts(["hello"]), enc.encode_texts(["hello"]),
                               atol=1e-6)


def test_encode_pixels_validates_shape(enc):
    with pytest.raises(BadRequest):
        enc.encode_pixels(np.zeros((2, 32, 32), np.uint8))


@pytest.mark.parametrize("model,pretrained,needle", [
    ("no-such-model", "none", "unknown open_clip model"),
    ("/nonexistent/model.json", "none", "does not exist"),
    ("ViT-B-32", "no_such_tag", "known tags"),
    ("ViT-B-32", "/nonexistent/weights.safetensors", "does not exist"),
    ("RN50", None, "needs --pretrained"),
])
def test_bad_model_names_fail_with_a_message(model, pretrained, needle):
    with pytest.raises(ModelUnavailable) as e:
        OpenClipEncoder.load(model, pretrained, device="cpu")
    assert needle in str(e.value)


def test_uncached_pretrained_weights_fail_fast_naming_the_offline_options(monkeypatch, tmp_path):
    """With the hub probe pointed at a closed local port the load fails at once, on any
    machine (whether or not the real hub is reachable from it)."""
    import time

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    sock, port = closed_port()
    try:
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable) as e:
            OpenClipEncoder.load("ViT-B-32", None, device="cpu", hub_address=f"127.0.0.1:{port}")
        assert time.monotonic() - t0 < 30  # no minute of download retries
    finally:
        sock.close()
    assert "clipsearch-mini" in str(e.value) and "--pretrained" in str(e.value)


def test_hub_probe_address():
    from search.config import Settings
    from search.encoder import DEFAULT_HUB_ADDRESS, hub_reachable, parse_address

    assert Settings().hub_address == DEFAULT_HUB_ADDRESS
    assert parse_address("huggingface.co:443") == ("huggingface.co", 443)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    for bad in ("huggingface.co", ":443", "host:0", "host:99999", "host:http"):
        with pytest.raises(BadRequest):
            parse_address(bad)
    sock, port = closed_port()
    try:
        assert not hub_reachable(f"127.0.0.1:{port}")
        sock.listen(1)  # the same port, now answering
        assert hub_reachable(f"127.0.0.1:{port}")
    finally:
        sock.close()
