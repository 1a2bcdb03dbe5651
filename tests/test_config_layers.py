"""Settings parsing, their documentation, and the one-way layering of the packages."""
from __future__ import annotations

import ast
import os

import pytest

from search.config import SETTINGS, Settings
from search.errors import BadRequest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_env_and_overrides_layer_in_order(tmp_path):
    env = {"CLIPSEARCH_DATA_DIR": str(tmp_path / "d"), "CLIPSEARCH_BATCH_SIZE": "7",
           "CLIPSEARCH_API_KEYS": "a, b,,", "CLIPSEARCH_USE_GPU": "no",
           "CLIPSEARCH_MODEL": "from-env"}
    s = Settings.from_env(env, model="from-option", batch_size=None)
    assert s.model == "from-option" and s.batch_size == 7 and s.api_keys == ("a", "b")
    assert s.use_gpu is False and os.path.isabs(s.data_dir)
    assert s.database_url == "sqlite:///" + os.path.join(s.data_dir, "clipsearch.db")
    assert Settings.from_env({"CLIPSEARCH_DB_URL": "postgresql://x/y"}).database_url == "postgresql://x/y"


@pytest.mark.parametrize("var,value", [("CLIPSEARCH_BATCH_SIZE", "many"),
                                       ("CLIPSEARCH_USE_GPU", "maybe")])
def test_malformed_values_are_bad_requests(var, value):
    with pytest.raises(BadRequest) as e:
        Settings.from_env({var: value})
    assert var in str(e.value)


def test_every_setting_is_documented_in_the_readme():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    missing = [env for _, env, _, _ in SETTINGS if env and env not in readme]
    assert not missing, f"README.md does not document {missing}"


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _reads_environment(path: str) -> bool:
    tree = ast.parse(open(path, encoding="utf-8").read())
    return any(isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv", "environb")
               for n in ast.walk(tree))


def test_search_library_imports_no_edge_packages_and_reads_no_environment():
    bad = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "search")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            forbidden = _imports(path) & {"flask", "click", "web", "indexer", "werkzeug"}
            if forbidden:
                bad.append(f"{f} imports {sorted(forbidden)}")
            if _reads_environment(path):
                bad.append(f"{f} reads the environment")
    assert not bad, bad


def test_only_the_encoder_imports_torch_in_the_library():
    users = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "search")):
        for f in files:
            if f.endswith(".py") and {"torch", "open_clip"} & _imports(os.path.join(dirpath, f)):
                users.append(f)
    assert users == ["encoder.py"] or set(users) <= {"encoder.py", "__init__.py"}, users
