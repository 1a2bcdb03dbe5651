"""The real `clipsearch` CLI, run as a subprocess, over a generated library of 500+ images."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import closed_port
from imagegen import make_library, pattern

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
pytestmark = pytest.mark.slow


def run_cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "clipsearch", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"clipsearch {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    root = str(base / "photos")
    lib = make_library(root, n_good=500, big_side=1500)
    # a symlink leading outside the root must be ignored
    outside = base / "outside"
    outside.mkdir()
    pattern(__import__("numpy").random.default_rng(9), 40, 40).save(outside / "elsewhere.png")
    os.symlink(outside / "elsewhere.png", os.path.join(root, "link-out.png"))
    os.symlink(outside, os.path.join(root, "dir-out"))
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=str(base / "data"), CLIPSEARCH_MODEL=TINY,
               CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="1",
               CLIPSEARCH_MAX_PIXELS=str(2_000_000), PYTHONPATH=os.pathsep.join(sys.path))
    return {"root": root, "lib": lib, "env": env, "db": str(base / "data" / "clipsearch.db")}


def index_json(world) -> dict:
    proc = run_cli(world["env"], "index", world["root"], "--json", "--no-progress")
    return json.loads(proc.stdout)


def db_rows(world, sql: str) -> list:
    con = sqlite3.connect(world["db"])
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_first_run_indexes_every_good_file_and_reports_bad_ones(world):
    lib = world["lib"]
    summary = index_json(world)
    assert summary["added"] == len(lib.good) == 500
    assert summary["skipped"] == len(lib.bad)
    reasons = {f["path"]: f["reason"] for f in summary["skipped_files"]}
    assert set(reasons) == set(lib.bad)
    for path, expected in lib.bad.items():
        assert expected in reasons[path].lower(), (path, reasons[path])
    indexed = {p for (p,) in db_rows(world, "select path from media_items where status='indexed'")}
    assert indexed == set(lib.good)
    formats = dict(db_rows(world, "select format, count(*) from media_items "
                                  "where status='indexed' group by format"))
    assert set(formats) == {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"}
    # EXIF capture time and camera were read from the JPEGs
    dated = db_rows(world, "select count(*) from media_items where captured_at is not null "
                           "and camera = 'TestCam Model 1'")[0][0]
    assert dated == formats["JPEG"]
    check = run_cli(world["env"], "check")
    assert "agree" in check.stdout


def test_second_run_adds_nothing(world):
    summary = index_json(world)
    assert (summary["added"], summary["updated"], summary["moved"], summary["removed"]) == (0, 0, 0, 0)
    assert summary["unchanged"] == len(world["lib"].good) + len(world["lib"].bad)


def test_indexed_image_searched_by_its_own_file_comes_first(world):
    for path in (world["lib"].good[0], world["lib"].good[1], world["lib"].good[4]):
        proc = run_cli(world["env"], "search", "--image", path, "--json", "-k", "3")
        hits = json.loads(proc.stdout)
        assert hits[0]["path"] == path
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_search_json_shape(world):
    hits = json.loads(run_cli(world["env"], "search", "a photo", "--json", "-k", "7").stdout)
    assert len(hits) == 7
    assert all({"id", "path", "score"} <= set(h) for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_moved_subfolder_reembeds_nothing(world):
    before = dict(db_rows(world, "select path, id from media_items"))
    src = os.path.join(world["root"], "album1")
    dst = os.path.join(world["root"], "renamed", "album1-moved")
    os.makedirs(os.path.dirname(dst))
    shutil.move(src, dst)
    moved = [p for p in world["lib"].good if p.startswith(src + os.sep)]
    summary = index_json(world)
    assert summary["moved"] == len(moved) > 0
    assert (summary["added"], summary["updated"], summary["removed"]) == (0, 0, 0)
    after = dict(db_rows(world, "select path, id from media_items"))
    for old in moved:
        new = old.replace(src, dst, 1)
        assert after[new] == before[old]  # same row, same vector
    world["lib"].good = [p.replace(src, dst, 1) if p in moved else p for p in world["lib"].good]


def test_deleted_files_disappear_from_results(world):
    victims = world["lib"].good[10:13]
    ids = {p: i for p, i in db_rows(world, "select path, id from media_items")}
    for p in victims:
        os.remove(p)
    summary = index_json(world)
    assert summary["removed"] == 3 and summary["added"] == 0
    for p in victims:
        hits = json.loads(run_cli(world["env"], "search", "--item", str(ids[world["lib"].good[20]]),
                                  "--json", "-k", "500").stdout)
        assert p not in {h["path"] for h in hits}
        assert ids[p] not in {h["id"] for h in hits}
    left = {p for (p,) in db_rows(world, "select path from media_items")}
    assert not left & set(victims)
    assert "agree" in run_cli(world["env"], "check").stdout


def test_changed_file_is_reembedded_under_the_same_id(world):
    path = world["lib"].good[30]
    old_id = db_rows(world, f"select id from media_items where path='{path}'")[0][0]
    img = pattern(__import__("numpy").random.default_rng(123), 70, 50)
    img.save(path, format=__import__("PIL.Image").Image.open(path).format)
    summary = index_json(world)
    assert summary["updated"] == 1 and summary["added"] == 0
    assert db_rows(world, f"select id from media_items where path='{path}'")[0][0] == old_id


def test_texts_add_and_image_to_text_search(world, tmp_path):
    lines = tmp_path / "captions.txt"
    lines.write_text("a red square\n\na blue circle\na red square\n")
    out = run_cli(world["env"], "texts", "add", str(lines)).stdout
    assert "added 2 texts" in out
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text('{"text": "a green tree", "source": "trees"}\n{"text": "tall grass"}\n')
    assert "added 2 texts" in run_cli(world["env"], "texts", "add", str(jsonl)).stdout
    hits = json.loads(run_cli(world["env"], "search", "--image", world["lib"].good[0], "--texts",
                              "--json", "-k", "10").stdout)
    assert {h["text"] for h in hits} == {"a red square", "a blue circle", "a green tree", "tall grass"}
    assert all({"id", "text", "score"} <= set(h) for h in hits)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    proc = run_cli(world["env"], "texts", "add", str(bad), check=False)
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr


def test_stats_and_check_detects_disagreement(world):
    st = json.loads(run_cli(world["env"], "stats", "--json").stdout)
    assert st["images_indexed"] == len(world["lib"].good) - 3
    assert st["model"]["name"] == "tiny-clip"
    # forge a disagreement: a row whose vector the index file never saw
    con = sqlite3.connect(world["db"])
    vec = con.execute("select vector from media_items where vector is not null limit 1").fetchone()[0]
    con.execute("insert into media_items (root, path, size, mtime, status, vector, indexed_at) "
                "values ('/x', '/x/forged.png', 1, 1, 'indexed', ?, '2020-01-01')", (vec,))
    con.commit()
    con.close()
    proc = run_cli(world["env"], "check", check=False)
    assert proc.returncode == 1
    assert "1 ids in the store but not in the index" in proc.stdout
    # any command that loads the library repairs it from the store
    run_cli(world["env"], "search", "x", "--json")
    assert run_cli(world["env"], "check").returncode == 0


def test_other_model_is_refused_with_a_clear_message(world, tmp_path):
    other = tmp_path / "tiny-other.json"
    cfg = json.load(open(TINY))
    cfg["embed_dim"] = 16
    other.write_text(json.dumps(cfg))
    env = dict(world["env"], CLIPSEARCH_MODEL=str(other))
    proc = run_cli(env, "search", "anything", check=False)
    assert proc.returncode == 2
    assert "tiny-clip" in proc.stderr and "tiny-other" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unavailable_pretrained_weights_fail_fast_with_instructions(world):
    sock, port = closed_port()  # the hub probe gets a refused connection, on any machine
    env = dict(world["env"], CLIPSEARCH_MODEL="ViT-B-32", CLIPSEARCH_PRETRAINED="laion2b_s34b_b79k",
               HF_HUB_CACHE=os.path.join(world["root"], "..", "empty-hf-cache"),
               CLIPSEARCH_HUB_ADDRESS=f"127.0.0.1:{port}")
    try:
        proc = run_cli(env, "search", "anything", check=False)
    finally:
        sock.close()
    assert proc.returncode == 2, proc.stderr
    assert "clipsearch-mini" in proc.stderr and "--pretrained" in proc.stderr
    assert "Traceback" not in proc.stderr
