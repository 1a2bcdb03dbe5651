"""The OpenAPI document is valid, and a schema-driven fuzz run finds no 5xx and no
response that disagrees with the document (schemathesis against the WSGI app, in-process)."""
from __future__ import annotations

import os

import pytest
from conftest import AUTH, CORPUS, build_settings, index_folder, require_module, write_gallery

schemathesis = require_module("schemathesis", "schemathesis", "pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

MAX_EXAMPLES = 25


def test_document_is_valid_openapi():
    from openapi_spec_validator import validate

    from search.options import FILTER_KEYS
    from web.openapi import document
    from web.openapi_components import FILTER_PROPS

    validate(document())
    assert set(FILTER_PROPS) == set(FILTER_KEYS)


def test_document_covers_every_api_route(app):
    from web.openapi import document

    documented = {(path, method.upper()) for path, ops in document()["paths"].items()
                  for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<int:item_id>", "{item_id}").replace("<int:job_id>", "{job_id}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, encoder):
    """An app over its own small library: the fuzzer holds a valid key and may delete."""
    from search.corpus import add_texts
    from web import create_app

    base = tmp_path_factory.mktemp("fuzz")
    root = os.path.realpath(str(base / "library"))
    write_gallery(root, n=15)
    settings = build_settings(str(base / "data"), library_roots=(root,))
    service = index_folder(settings, encoder, root)
    add_texts(service.library, encoder, [(t, "corpus") for t in CORPUS])
    app = create_app(settings, service=service)
    yield app
    app.extensions["clipsearch"].jobs.wait(60)
    service.library.close()


@pytest.fixture(scope="module")
def unhandled_before():
    from web.metrics import UNHANDLED_ERRORS
    return UNHANDLED_ERRORS._value.get()


@pytest.fixture(scope="module")
def api_schema(fuzz_app, unhandled_before):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_app)


CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance,
          st_checks.content_type_conformance, st_checks.response_schema_conformance,
          st_checks.response_headers_conformance, st_checks.negative_data_rejection]


def _operations() -> list:
    """(path, method, mode) of every operation; negative mode where there is input to break."""
    from web.openapi import document

    out = []
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            out.append(pytest.param(path, method.upper(), "positive"))
            if op.get("parameters") or op.get("requestBody"):
                out.append(pytest.param(path, method.upper(), "negative"))
    return out


# schemathesis' own pytest integration (schema.parametrize / from_fixture) does not run
# under pytest 9, so each operation drives a plain hypothesis test over its strategy.
@pytest.mark.parametrize("path, method, mode", _operations())
def test_fuzz_api_against_its_document(api_schema, path, method, mode):
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case):
        # A valid key, so that write operations get past auth and are exercised for real.
        case.call_and_validate(headers=dict(AUTH), checks=CHECKS)

    run()


def test_fuzzing_never_reached_the_last_resort_handler(unhandled_before):
    from web.metrics import UNHANDLED_ERRORS
    assert UNHANDLED_ERRORS._value.get() == unhandled_before

