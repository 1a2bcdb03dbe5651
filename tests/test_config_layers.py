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


PACKAGES = ("search", "indexer", "web", "clipsearch")   # lowest layer first
LAYER = {name: rank for rank, name in enumerate(PACKAGES)}


def _modules() -> dict[str, str]:
    """``{dotted module name: file}`` of every module of the four packages."""
    out = {}
    for package in PACKAGES:
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "migrations")]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3]
                    name = rel.replace(os.sep, ".")
                    out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = \
                        os.path.join(dirpath, f)
    return out


def _imported(module: str, path: str, known: set[str]) -> set[str]:
    """Project modules that ``module`` imports anywhere (function-local imports included;
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module)."""
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for name in targets:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imported(m, path, known) for m, path in modules.items()}


def test_layers_point_one_way():
    """search <- indexer <- web <- clipsearch: nothing imports from a layer above it."""
    bad = [f"{m} imports {t}" for m, targets in _graph().items() for t in sorted(targets)
           if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not bad, bad


def test_no_module_imports_another_that_imports_it_back():
    """No import cycles at all (two modules importing each other is the shortest one)."""
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):                       # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


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


def test_only_the_encoder_and_the_bundled_models_import_torch_in_the_library():
    users = sorted(m for m, path in _modules().items()
                   if m.startswith("search") and {"torch", "open_clip"} & _imports(path))
    # search.models.towers: the two-tower image side of the bundled clipsearch-mini-lite2
    assert users == ["search.encoder.loading", "search.encoder.openvino_encoder",
                     "search.encoder.torch_encoder", "search.models",
                     "search.models.towers"], users


def test_only_the_openvino_encoder_imports_an_inference_runtime():
    runtimes = {"openvino", "nncf", "onnxruntime", "onnx"}
    users = sorted(m for m, path in _modules().items() if runtimes & _imports(path))
    assert users == ["search.encoder.openvino_encoder"], users


MAX_MODULE_LINES = 400


def test_modules_stay_small():
    """A module over 400 lines holds more than one concern: split it along one."""
    long = {m: n for m, path in _modules().items()
            if (n := sum(1 for _ in open(path, encoding="utf-8"))) > MAX_MODULE_LINES}
    assert not long, long


if __name__ == "__main__":   # `python tests/test_config_layers.py`: the graph between packages
    import collections

    edges = collections.Counter((m.split(".")[0], t.split(".")[0])
                                for m, targets in _graph().items() for t in targets
                                if m.split(".")[0] != t.split(".")[0])
    for (src, dst), n in sorted(edges.items(), key=lambda e: (LAYER[e[0][0]], LAYER[e[0][1]])):
        print(f"{src} -> {dst}: {n} imports")
