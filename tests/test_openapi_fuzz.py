"""The API keeps its own contract: the OpenAPI document is valid, and the server and the
document agree on every request schemathesis can make of it.

The fuzz run is schemathesis' own engine (what ``schemathesis run`` does) with every
check on, all four phases (examples, coverage, fuzzing, stateful), against the app
served on 127.0.0.1 over a small real library; a few examples per operation keep it
under two minutes. The big run (60 examples per operation, 8,000 items) is
bench/fuzz_api.py, by hand; its figures are in docs/benchmarks.md.

The rules the JSON Schema patterns state (dates that exist, format lists, path
prefixes) are also checked directly: the server accepts a value exactly when the
document's pattern does.
"""
from __future__ import annotations

import os
import re
import threading

import pytest
from conftest import API_KEY, AUTH, CORPUS, build_settings, index_folder, require_module, write_gallery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = require_module("schemathesis", "schemathesis", "pip install -e '.[dev]'")
import fuzz_hooks  # noqa: E402,F401  (uploads drawn as real images, as the document asks)

MAX_EXAMPLES = 5
#: Statuses that reject a schema-violating request. schemathesis' default list plus 413
#: (body over the upload limit) and 414 (URL over the HTTP server's request-line limit,
#: answered by gunicorn before the app; documented as such).
#: Answers to schema-valid requests. schemathesis' default list plus 416: a valid Range
#: header may still lie past the end of the file (documented on /items/{id}/file).
ACCEPTANCES = ["2xx", "3xx", "401", "403", "404", "409", "416", "429", "5xx"]
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422",
              "428", "429", "5xx"]


def test_document_is_valid_openapi():
    from openapi_spec_validator import validate

    from search.options import FILTER_KEYS
    from web.openapi import document
    from web.openapi_components import FILTER_PROPS

    validate(document())
    validate(document(vector_dim=512))
    assert set(FILTER_PROPS) == set(FILTER_KEYS)


def test_document_covers_every_api_route(app):
    from web.openapi import document

    documented = {(path, method.upper()) for path, ops in document()["paths"].items()
                  for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<int:(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_served_document_states_the_model_dimension(client, encoder):
    doc = client.get("/api/openapi.json").get_json()
    vector = next(t for t in doc["components"]["schemas"]["Term"]["oneOf"]
                  if "vector" in t["properties"])["properties"]["vector"]
    assert vector["minItems"] == vector["maxItems"] == encoder.dim


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory, encoder):
    """An app over its own small library, served on 127.0.0.1: the fuzzer holds a valid key
    and may delete, index and add texts."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from search.corpus import add_texts
    from web import create_app

    base = tmp_path_factory.mktemp("fuzz")
    root = os.path.realpath(str(base / "library"))
    write_gallery(root, n=15)
    settings = build_settings(str(base / "data"), library_roots=(root,))
    service = index_folder(settings, encoder, root)
    add_texts(service.library, encoder, [(t, "corpus") for t in CORPUS])
    app = create_app(settings, service=service)
    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):  # thousands of requests: no access log
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    app.extensions["clipsearch"].jobs.wait(60)
    service.library.close()


@pytest.fixture(scope="module")
def unhandled_before():
    from web.metrics import UNHANDLED_ERRORS
    return UNHANDLED_ERRORS._value.get()


def run_schemathesis(url: str, *, max_examples: int, seed: int = 0) -> dict:
    """schemathesis' engine on ``url``/api/openapi.json with every check and phase.

    Returns {"cases": n, "checks": {(check, status): count}, "failures": [...],
    "errors": [...], "operations": set of tested operation labels}."""
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events, from_schema

    config = SchemathesisConfig.from_dict({
        "seed": seed,
        "headers": dict(AUTH),
        "suppress-health-check": ["all"],
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS},
                   "positive_data_acceptance": {"expected-statuses": ACCEPTANCES}},
        "generation": {"max-examples": max_examples, "database": "none"},
        "phases": {name: {"enabled": True}
                   for name in ("examples", "coverage", "fuzzing", "stateful")},
    })
    schema = schemathesis.openapi.from_url(f"{url}/api/openapi.json", config=config)
    schema.config.checks.update(included_check_names=["all"])
    out: dict = {"cases": 0, "checks": {}, "failures": [], "errors": [], "operations": set()}
    for event in from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            out["cases"] += len(event.recorder.cases)
            out["operations"].add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    key = (check.name, check.status.name)
                    out["checks"][key] = out["checks"].get(key, 0) + 1
                    if check.status == Status.FAILURE:
                        failure = check.failure_info.failure if check.failure_info else None
                        out["failures"].append(
                            f"{event.recorder.label}: {check.name}: "
                            f"{failure.title if failure else ''} {failure.message if failure else ''}")
        elif isinstance(event, events.NonFatalError):
            out["errors"].append(f"{event.label}: {event.info.format()}"[:3000])
        elif isinstance(event, events.FatalError):
            raise event.exception
    return out


@pytest.mark.slow
def test_api_keeps_its_own_contract(fuzz_url, unhandled_before):
    from web.openapi import document

    result = run_schemathesis(fuzz_url, max_examples=MAX_EXAMPLES)
    assert not result["errors"], "\n\n".join(result["errors"][:5])
    assert not result["failures"], "\n".join(sorted(set(result["failures"]))[:30])
    operations = {f"{method.upper()} {path}" for path, ops in document()["paths"].items()
                  for method in ops} - {"GET /api/openapi.json"}  # the document itself
    assert operations <= result["operations"]  # every operation was exercised
    ran = {name for name, status in result["checks"] if status == "SUCCESS"}
    for check in ("not_a_server_error", "status_code_conformance", "content_type_conformance",
                  "response_schema_conformance", "response_headers_conformance",
                  "negative_data_rejection", "positive_data_acceptance", "use_after_free",
                  "ensure_resource_availability", "ignored_auth", "missing_required_header",
                  "unsupported_method"):
        assert check in ran, check
    assert result["cases"] > 1000


def test_fuzzing_never_reached_the_last_resort_handler(fuzz_url, unhandled_before):
    from web.metrics import UNHANDLED_ERRORS
    assert UNHANDLED_ERRORS._value.get() == unhandled_before


# -- the document's patterns are the server's rules -----------------------------------------------
def _accepts(parse, value) -> bool:
    from search.errors import BadRequest

    try:
        parse(value)
    except BadRequest:
        return False
    return True


def _date(value):
    from search.options import parse_filters
    return parse_filters({"captured_after": value})


DATE_LIKE = st.one_of(
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?)?\Z"),
    st.text(alphabet="0123456789-:TZ .+", max_size=30), st.text(max_size=12))


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(value=DATE_LIKE)
def test_dates_are_accepted_exactly_when_the_pattern_matches(value):
    from search.options import DATE_PATTERN
    assert _accepts(_date, value) == bool(re.search(DATE_PATTERN, value)), value


@pytest.mark.parametrize("value, ok", [
    ("2024-02-29", True), ("2023-02-29", False), ("1900-02-29", False), ("2000-02-29", True),
    ("7760-02-31", False), ("2024-04-31", False), ("2024-04-30T23:59:59.999999+14:00", True),
    ("2024-05-31 10:00Z", True), ("", True), ("0999-01-01", False), ("2024-5-1", False),
    ("2024-05-31T24:00", False), ("2024-05-31\n", True), (" 2024-05-31", False),
])
def test_date_examples(value, ok):
    from search.options import DATE_PATTERN
    assert bool(re.search(DATE_PATTERN, value)) is ok
    assert _accepts(_date, value) is ok


FORMAT_LIKE = st.lists(st.sampled_from(["JPEG", "jpg", "Png", "heic", "svg", "", " ", ",", "\t",
                                        "TIF", "x", "JPEG PNG", "\n"]),
                       max_size=6).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(value=FORMAT_LIKE)
def test_format_lists_are_accepted_exactly_when_the_pattern_matches(value):
    from search.options import FORMAT_PATTERN, parse_filters
    assert (_accepts(lambda v: parse_filters({"format": v}), value)
            == bool(re.search(FORMAT_PATTERN, value))), value


PREFIX_LIKE = st.lists(st.sampled_from(["a", "..", ".", "/", "\\", "...", ".a", "b c", "\x00",
                                        "\n", "é"]), max_size=6).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(value=PREFIX_LIKE)
def test_path_prefixes_are_accepted_exactly_when_the_pattern_matches(value):
    from search.options import PATH_PREFIX_PATTERN, parse_filters
    assert (_accepts(lambda v: parse_filters({"path_prefix": v}), value)
            == bool(re.search(PATH_PREFIX_PATTERN, value))), value


TEXT_LIKE = st.lists(st.sampled_from(["a", " ", "\x00", "\n", "\t", "\u3000", "é", "\x1c",
                                      "\x85", "\u2028", "\ufeff", "\xa0"]),
                     max_size=5).map("".join)


def test_whitespace_in_patterns_is_what_the_server_strips():
    """The document spells whitespace out: "\\s" means other sets in ECMAScript (where
    U+0085 is not whitespace) and in generators; the server strips str.isspace()."""
    from web.openapi_components import WHITESPACE

    spelled = re.compile(f"[{WHITESPACE}]")
    assert all(bool(spelled.match(chr(c))) == chr(c).isspace() for c in range(0x110000))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(value=TEXT_LIKE)
def test_texts_are_accepted_exactly_when_the_pattern_matches(value):
    from search.options import text_param
    from web.openapi_components import NOT_BLANK
    assert _accepts(text_param, value) == bool(re.search(NOT_BLANK, value)), repr(value)


# -- the disagreements the big run found, one by one ----------------------------------------------
def test_an_empty_date_range_is_a_valid_query_matching_nothing(client):
    resp = client.get("/api/search?q=x&captured_after=2021-01-02&captured_before=2021-01-01")
    assert resp.status_code == 200 and resp.get_json()["results"] == []


def test_terms_are_exactly_what_the_document_says(client, encoder):
    for term in ({"text": "x", "weight": "1"}, {"text": "x", "weight": None},
                 {"text": "x", "item_id": None}, {"text": None}, {"weight": 1}):
        assert client.post("/api/search", json={"terms": [term]}).status_code == 400, term
    zero = client.post("/api/search", json={"terms": [{"vector": [0.0] * encoder.dim}]})
    assert zero.status_code == 200 and zero.get_json()["results"] == []  # no direction
    huge = client.post("/api/search", json={"terms": [{"vector": [1e30] * encoder.dim}]})
    assert huge.status_code == 200 and huge.get_json()["results"]


def test_multipart_parts_are_parts_with_or_without_a_file_name(client, indexed_library):
    import io
    import json

    g = next(g for g in indexed_library.images if g.format == "PNG")
    with open(os.path.join(indexed_library.root, *g.rel.split("/")), "rb") as f:
        data = f.read()
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
            + json.dumps({"terms": [{"image": "pic"}], "k": 1})
            + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"pic\"\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    resp = client.post("/api/search", data=body,
                       content_type=f"multipart/form-data; boundary={boundary}")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["results"][0]["id"] == indexed_library.ids[g.rel]
    # A term naming a part the request does not have: like an unknown item, 404.
    missing = client.post("/api/search", data={
        "query": json.dumps({"terms": [{"image": "nope"}]}),
        "pic": (io.BytesIO(data), "pic.png")}, content_type="multipart/form-data")
    assert missing.status_code == 404
    # The image of an image search, sent without a file name, is still the image.
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}\r\nContent-Disposition: form-data; " \
                                f"name=\"k\"\r\n\r\n1\r\n--{boundary}--\r\n".encode()
    resp = client.post("/api/search/image", data=body,
                       content_type=f"multipart/form-data; boundary={boundary}")
    assert resp.status_code == 200 and len(resp.get_json()["results"]) == 1


def test_texts_searches_document_sort_by_score_only(client):
    from web.openapi import document

    doc = document()
    texts = doc["paths"]["/api/search/texts"]["post"]
    sort = next(p for p in texts["parameters"] if p["name"] == "sort")
    assert sort["schema"]["enum"] == ["score"]
    assert doc["components"]["schemas"]["ByItemForTexts"]["properties"]["sort"]["enum"] == [
        "score"]
    combined = doc["components"]["schemas"]["CombinedQuery"]["oneOf"]
    assert {tuple(v["properties"]["target"]["enum"]): v["properties"]["sort"]["enum"]
            for v in combined} == {("images",): ["score", "date"], ("texts",): ["score"]}
    assert client.post("/api/search/texts", json={"item_id": 1, "sort": "date"}
                       ).status_code == 400


def test_sidecar_sources_are_outside_the_document_and_refused(client):
    from web.openapi import document

    doc = document()
    source = next(p for p in doc["paths"]["/api/texts"]["delete"]["parameters"]
                  if p["name"] == "source")["schema"]
    assert re.search(source["not"]["pattern"], " sidecar:a.jpg")
    assert client.delete("/api/texts?source=sidecar:a.jpg", headers=AUTH).status_code == 400


def test_long_urls_are_documented_as_414(client):
    from web.openapi import document

    for path, method in (("/api/search", "get"), ("/api/search/image", "post"),
                         ("/api/items/{item_id}/similar", "get")):
        resp = document()["paths"][path][method]["responses"]["414"]
        assert "text/html" in resp["content"]


def test_the_key_is_not_used_by_the_document(client):
    assert API_KEY not in client.get("/api/openapi.json").get_data(as_text=True)
