"""CLIPSEARCH_PRECISION: the OpenVINO modes, the auto choice, identity and cross-mode search."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from search.config import Settings
from search.encoder import available_modes, build_encoder, load_encoder
from search.encoder.openvino_encoder import OpenVinoEncoder, cpu_capabilities
from search.encoder.precision import choose, faithful_modes, fidelity_table, passes
from search.errors import BadRequest
from search.ingest.job import IndexJob
from search.library import Library

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
GOOD = {"top10_agreement_min": 0.995, "recall10_drop_points": 0.1}
RANDOM_GOOD = {"top10_agreement_min": 0.99, "recall10_drop_points": None,
               "recall_not_applicable": True}


@pytest.fixture(scope="module")
def fp32():
    return build_encoder(TINY, "none", precision="fp32")


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    return build_encoder(TINY, "none", precision="int8",
                         cache_dir=str(tmp_path_factory.mktemp("ov-cache")))


def _images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8))
            for i in range(n)]


def test_the_gate_needs_both_agreement_and_recall():
    assert passes(GOOD) and passes(RANDOM_GOOD)
    assert not passes({**GOOD, "top10_agreement_min": 0.97})
    assert not passes({**GOOD, "recall10_drop_points": 0.6})
    assert not passes({"top10_agreement_min": 0.99, "recall10_drop_points": None})


def test_auto_picks_the_fastest_faithful_mode(fp32):
    ident = fp32.identity
    key = f"{ident.name}|{ident.pretrained}"
    both = {"int8", "bf16", "fp32", "fp32-ov"}
    table = {key: {"int8": GOOD, "bf16": GOOD}}
    assert choose("auto", ident, "cpu", available=both, table=table) == "int8"
    table = {key: {"int8": {**GOOD, "top10_agreement_min": 0.8}, "bf16": GOOD}}
    assert choose("auto", ident, "cpu", available=both, table=table) == "bf16"
    assert choose("auto", ident, "cpu", available={"fp32", "int8"}, table=table) == "fp32"
    assert choose("auto", ident, "cpu", available=both, table={}) == "fp32"  # unmeasured model
    assert choose("auto", ident, "cuda:0", available={"fp32", "fp16"}, table=table) == "fp16"
    assert choose("int8", ident, "cpu", available=both, table={}) == "int8"  # asked for: given
    # compiled fp32 is gated like the others: faster than eager, used only where measured
    table = {key: {"int8": {**GOOD, "top10_agreement_min": 0.8}, "fp32-ov": GOOD}}
    assert choose("auto", ident, "cpu", available=both, table=table) == "fp32-ov"
    assert choose("auto", ident, "cpu", available={"fp32"}, table=table) == "fp32"
    table = {key: {"fp32-ov": {**GOOD, "top10_agreement_min": 0.9}}}
    assert choose("auto", ident, "cpu", available=both, table=table) == "fp32"


@pytest.mark.parametrize("mode,device,needle", [
    ("fp16", "cpu", "CUDA"), ("int8", "cuda", "CPU mode"), ("fp32-ov", "cuda", "CPU mode"),
    ("fp64", "cpu", "must be one of")])
def test_impossible_modes_are_refused_with_a_reason(fp32, mode, device, needle):
    with pytest.raises(BadRequest) as e:
        choose(mode, fp32.identity, device, available={"fp32", "int8"}, table={})
    assert needle in str(e.value)


def test_the_shipped_table_gates_the_bundled_model():
    table = fidelity_table()
    mini = [k for k in table if k.startswith("clipsearch-mini|")]
    assert mini, "the bundled model has no fidelity measurement"
    for key in mini:
        for mode, m in table[key].items():
            assert passes(m) == m["passes"], (key, mode)


def test_int8_is_openvino_and_close_to_fp32(fp32, int8):
    assert isinstance(int8, OpenVinoEncoder)
    assert int8.identity == fp32.identity.with_precision("int8")
    assert int8.identity.same_model(fp32.identity)
    ims = _images()
    a, b = fp32.encode_images(ims), int8.encode_images(ims)
    assert b.shape == a.shape and b.dtype == np.float32 and b.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.sum(a * b, axis=1).min() > 0.95
    texts = ["a cat", "a red car on a beach", "x" * 3000]
    t32, t8 = fp32.encode_texts(texts), int8.encode_texts(texts)
    assert np.sum(t32 * t8, axis=1).min() > 0.95
    assert int8.encode_texts([]).shape == (0, 32) and int8.encode_images([]).shape == (0, 32)
    with pytest.raises(BadRequest):
        int8.encode_pixels(np.zeros((2, 32, 32), np.uint8))


def test_converted_models_are_cached_and_reloaded_identically(tmp_path, int8):
    cache = str(tmp_path / "cache")
    first = build_encoder(TINY, "none", precision="int8", cache_dir=cache)
    (folder,) = os.listdir(os.path.join(cache, "openvino"))
    assert os.path.isfile(os.path.join(cache, "openvino", folder, "done.json"))
    t0 = time.monotonic()
    again = build_encoder(TINY, "none", precision="int8", cache_dir=cache)
    reload_s = time.monotonic() - t0
    ims = _images(4, seed=3)
    np.testing.assert_array_equal(first.encode_images(ims), again.encode_images(ims))
    # calibration is deterministic: a fresh conversion elsewhere gives the same network
    np.testing.assert_allclose(first.encode_images(ims), int8.encode_images(ims), atol=1e-6)
    assert reload_s < 60


@pytest.mark.skipif("BF16" not in cpu_capabilities(), reason="this CPU has no native bf16")
def test_bf16_mode(tmp_path, fp32):
    enc = build_encoder(TINY, "none", precision="bf16", cache_dir=str(tmp_path))
    assert enc.identity.precision == "bf16"
    ims = _images(6)
    assert np.sum(enc.encode_images(ims) * fp32.encode_images(ims), axis=1).min() > 0.99


def test_fp32_ov_is_openvino_with_fp32_arithmetic(tmp_path, fp32):
    enc = build_encoder(TINY, "none", precision="fp32-ov", cache_dir=str(tmp_path))
    assert isinstance(enc, OpenVinoEncoder) and enc.identity.precision == "fp32-ov"
    assert enc.identity.same_model(fp32.identity)
    assert "fp32-ov" in available_modes("cpu")
    ims = _images(8, seed=5)
    a, b = fp32.encode_images(ims), enc.encode_images(ims)
    # reordered fp32 sums only: far closer than bf16 (> 0.99) or int8 (> 0.95)
    assert np.sum(a * b, axis=1).min() > 0.99999
    texts = ["a cat", "two red cars", "x" * 3000]
    assert np.sum(fp32.encode_texts(texts) * enc.encode_texts(texts), axis=1).min() > 0.99999


def test_settings_choose_the_mode(tmp_path):
    s = Settings.from_env({"CLIPSEARCH_PRECISION": "int8", "CLIPSEARCH_MODEL": TINY,
                           "CLIPSEARCH_PRETRAINED": "none"}, data_dir=str(tmp_path))
    assert "int8" in available_modes("cpu")
    enc = load_encoder(s)
    assert enc.identity.precision == "int8"
    assert os.path.isdir(os.path.join(s.cache_dir, "openvino"))
    with pytest.raises(BadRequest):
        load_encoder(Settings.from_env({"CLIPSEARCH_PRECISION": "fast"}, model=TINY,
                                       pretrained="none", data_dir=str(tmp_path)))


def test_an_index_built_in_int8_answers_fp32_queries(tmp_path, fp32, int8):
    root = tmp_path / "pics"
    root.mkdir()
    for i, im in enumerate(_images(16, seed=5)):
        im.save(root / f"p{i:02d}.png")
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), model=TINY,
                                 pretrained="none", workers=0)
    lib = Library(settings)
    assert IndexJob(lib, int8, settings).run([str(root)]).added == 16
    assert lib.model["precision"] == "int8"
    lib.bind_model(fp32.identity)  # a query process in fp32: accepted, record unchanged
    assert lib.model["precision"] == "int8"
    q8 = int8.encode_texts(["a picture"])
    q32 = fp32.encode_texts(["a picture"])
    idx = lib.index("images", 32)
    _, ids8 = idx.search(q8, 5)
    _, ids32 = idx.search(q32, 5)
    assert len(set(ids8[0]) & set(ids32[0])) >= 3
    lib.close()


def test_faithful_modes_reads_the_table(fp32):
    key = f"{fp32.identity.name}|{fp32.identity.pretrained}"
    table = {key: {"int8": GOOD, "bf16": {**GOOD, "recall10_drop_points": 2.0}}}
    assert faithful_modes(fp32.identity, table) == ["int8"]
