"""Retrieval metrics: exact values on hand-built vectors, pair loading, one real-model run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from indexer.evaluate import caption_key, evaluate, load_pairs, retrieval_metrics
from search.errors import BadRequest, NotFound

HERE = os.path.dirname(os.path.abspath(__file__))


def unit(*rows):
    a = np.array(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_one_caption_per_image_exact_ranks():
    # 4 images on the axes; caption t is closest to image (t+shift) so ranks are known.
    images = np.eye(4, dtype=np.float32)
    # caption 0 -> image 0 best (rank 1); caption 1: image 1 second (rank 2);
    # caption 2: image 2 third (rank 3); caption 3: image 3 last (rank 4).
    texts = unit([1.0, 0.1, 0.0, 0.0],
                 [0.9, 0.5, 0.0, 0.0],
                 [0.9, 0.6, 0.3, 0.0],
                 [0.9, 0.6, 0.3, 0.1])
    m = retrieval_metrics(images, texts, [(i, i) for i in range(4)], ks=(1, 2, 3))
    t2i = m["text_to_image"]
    assert t2i == {"recall@1": 0.25, "recall@2": 0.5, "recall@3": 0.75, "mean_rank": 2.5}
    # image->text: image 0's best caption is caption 0? scores of image 0 over captions are
    # texts[:, 0] = 0.995, 0.874, 0.811, 0.808 -> caption 0 first: rank 1.
    # image 3 scores texts[:, 3] = 0, 0, 0, 0.1/|t3| -> its caption 3 is first: rank 1.
    # image 1 scores texts[:, 1]: caption 2 (0.532) > caption 3 (0.530) > caption 1 (0.486) -> rank 3.
    # image 2 scores texts[:, 2]: caption 2 (0.266) > caption 3 (0.265) -> rank 1.
    i2t = m["image_to_text"]
    assert i2t["recall@1"] == 0.75
    assert i2t["recall@3"] == 1.0
    assert i2t["mean_rank"] == pytest.approx((1 + 3 + 1 + 1) / 4)
    assert (m["pairs"], m["images"], m["captions"]) == (4, 4, 4)


def test_several_captions_per_image_any_counts():
    images = np.eye(3, dtype=np.float32)
    # captions 0,1 belong to image 0, caption 2 to image 1, caption 3 to image 2.
    texts = unit([0.2, 1.0, 0.0],   # describes image 0 but points at image 1
                 [1.0, 0.0, 0.0],   # describes image 0 well
                 [0.0, 1.0, 0.0],
                 [0.0, 0.0, 1.0])
    m = retrieval_metrics(images, texts, [(0, 0), (0, 1), (1, 2), (2, 3)], ks=(1, 5))
    # image 0: caption 1 scores 1.0 -> rank 1 although caption 0 is poor
    assert m["image_to_text"]["recall@1"] == 1.0
    assert m["image_to_text"]["mean_rank"] == 1.0
    # caption 0 ranks image 0 second -> t2i recall@1 = 3/4, mean rank (2+1+1+1)/4
    assert m["text_to_image"]["recall@1"] == 0.75
    assert m["text_to_image"]["mean_rank"] == 1.25


def test_duplicate_caption_is_one_query_with_several_answers():
    images = np.eye(3, dtype=np.float32)
    # caption 0 is given for images 0 and 1 (one query), caption 1 for image 2
    texts = unit([0.1, 0.2, 1.0], [0.0, 0.0, 1.0])
    m = retrieval_metrics(images, texts, [(0, 0), (1, 0), (2, 1)], ks=(1, 2))
    # caption 0 ranks image 2 (not relevant), then image 1 (relevant): rank 2
    assert m["text_to_image"] == {"recall@1": 0.5, "recall@2": 1.0, "mean_rank": 1.5}
    assert (m["pairs"], m["images"], m["captions"]) == (3, 3, 2)


def test_exact_tie_favours_the_relevant_item():
    images = unit([1.0, 0.0], [1.0, 0.0])  # the same picture twice
    texts = unit([1.0, 0.0], [0.0, 1.0])
    m = retrieval_metrics(images, texts, [(0, 0), (1, 1)], ks=(1,))
    # caption 0 ties between its image and the copy: the copy is not above it -> rank 1
    assert m["text_to_image"]["recall@1"] == 1.0


def test_bad_input_is_rejected():
    with pytest.raises(BadRequest):
        retrieval_metrics(np.zeros((0, 2)), np.zeros((1, 2)), [])
    with pytest.raises(BadRequest):
        retrieval_metrics(np.eye(2), np.eye(2), [(0, 0), (5, 1)])
    with pytest.raises(BadRequest):  # image 1 has no caption
        retrieval_metrics(np.eye(2), np.eye(2)[:1], [(0, 0)])


def test_caption_key_folds_case_and_space():
    assert caption_key("  A Red\tCircle ") == caption_key("a red circle")


def _png(path, colour):
    Image.new("RGB", (20, 20), colour).save(path)


def test_load_pairs_from_folder_csv_and_jsonl(tmp_path):
    _png(tmp_path / "a.png", "red")
    _png(tmp_path / "b.png", "blue")
    _png(tmp_path / "c.png", "green")  # no sidecar: skipped
    (tmp_path / "a.txt").write_text("a red square\nsomething red\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("a blue square\n", encoding="utf-8")
    pairs = load_pairs(str(tmp_path))
    assert sorted((os.path.basename(p), c) for p, c in pairs) == [
        ("a.png", "a red square"), ("a.png", "something red"), ("b.png", "a blue square")]

    (tmp_path / "list.csv").write_text("path,caption\na.png,red\nb.png,blue\n", encoding="utf-8")
    assert load_pairs(str(tmp_path / "list.csv")) == [
        (str(tmp_path / "a.png"), "red"), (str(tmp_path / "b.png"), "blue")]
    (tmp_path / "list.jsonl").write_text(
        json.dumps({"image": "a.png", "text": "red"}) + "\n\n", encoding="utf-8")
    assert load_pairs(str(tmp_path / "list.jsonl")) == [(str(tmp_path / "a.png"), "red")]

    (tmp_path / "bad.csv").write_text("file,label\na.png,red\n", encoding="utf-8")
    with pytest.raises(BadRequest):
        load_pairs(str(tmp_path / "bad.csv"))
    with pytest.raises(NotFound):
        load_pairs(str(tmp_path / "missing"))


def test_evaluate_with_a_real_tiny_model(tmp_path):
    from search.encoder import OpenClipEncoder

    encoder = OpenClipEncoder.load(os.path.join(HERE, "tiny-clip.json"), "none", device="cpu")
    colours = ["red", "blue", "green"]
    for c in colours:
        _png(tmp_path / f"{c}.png", c)
        (tmp_path / f"{c}.txt").write_text(f"a {c} square\n", encoding="utf-8")
    # a duplicated caption text on two images, in a different case: one query
    (tmp_path / "blue.txt").write_text("a blue square\nA Red Square\n", encoding="utf-8")
    result = evaluate(encoder, load_pairs(str(tmp_path)), batch_size=2)
    assert set(result) == {"text_to_image", "image_to_text", "pairs", "images", "captions"}
    assert (result["pairs"], result["images"], result["captions"]) == (4, 3, 3)
    for direction in ("text_to_image", "image_to_text"):
        r = result[direction]
        # 3 candidates: any ranking puts every answer within the top 5 (random weights)
        assert r["recall@5"] == r["recall@10"] == 1.0
        assert 1.0 <= r["mean_rank"] <= 3.0


def test_eval_command_prints_the_json_object(tmp_path):
    from types import SimpleNamespace

    from click.testing import CliRunner

    from clipsearch.commands_model import eval_cmd as eval_command
    from search.config import Settings
    from search.encoder import OpenClipEncoder

    encoder = OpenClipEncoder.load(os.path.join(HERE, "tiny-clip.json"), "none", device="cpu")
    for c in ("red", "blue"):
        _png(tmp_path / f"{c}.png", c)
    (tmp_path / "pairs.csv").write_text("path,caption\nred.png,red\nblue.png,blue\n",
                                       encoding="utf-8")
    obj = SimpleNamespace(settings=Settings(), encoder=lambda: encoder)
    out = CliRunner().invoke(eval_command, [str(tmp_path / "pairs.csv"), "--json"], obj=obj)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["pairs"] == 2
    assert result["text_to_image"]["recall@5"] == 1.0  # two candidates
    assert set(result["image_to_text"]) == {"recall@1", "recall@5", "recall@10", "mean_rank"}
