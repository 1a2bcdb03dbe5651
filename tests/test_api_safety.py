"""Hostile clients: uploads, traversal, keys, rate limits, CORS, error hygiene."""
from __future__ import annotations

import io
import logging
import os
import struct
import zlib

import pytest
from conftest import API_KEY, AUTH
from imagegen import png_bomb


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` pixels with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _upload(client, data: bytes, name: str = "x.png", url: str = "/api/search/image"):
    return client.post(url, data={"image": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def _assert_json_error(resp, status: int):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.is_json and isinstance(resp.get_json()["error"], str)
    assert "Traceback" not in resp.get_data(as_text=True)


# -- uploads --------------------------------------------------------------------------------------
def test_oversize_upload_is_413(make_app):
    client = make_app(max_upload_mb=1).test_client()
    resp = _upload(client, b"\x89PNG\r\n\x1a\n" + os.urandom(1024 * 1024 + 100))
    _assert_json_error(resp, 413)
    big_json = client.post("/api/search", data=b'{"terms": [' + b" " * (2 << 20) + b"]}",
                           content_type="application/json")
    _assert_json_error(big_json, 413)


def test_png_declaring_a_billion_pixels_is_refused_from_its_header(client):
    _assert_json_error(_upload(client, _png_header_only(40_000, 40_000)), 400)


def test_real_decompression_bomb_is_refused(indexed_library, tmp_path):
    import dataclasses

    from search.service import SearchService
    from web import create_app

    path = tmp_path / "bomb.png"
    png_bomb(str(path), side=4000)  # 16 MP in ~10 KB; this app allows 1 MP
    data = path.read_bytes()
    assert len(data) < 100_000
    shared = indexed_library.service
    service = SearchService(shared.library, shared.encoder, max_pixels=1_000_000)
    settings = dataclasses.replace(indexed_library.settings, max_pixels=1_000_000)
    client = create_app(settings, service=service).test_client()
    resp = _upload(client, data)
    _assert_json_error(resp, 400)
    assert "pixels" in resp.get_json()["error"]


@pytest.mark.parametrize("data, name", [
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
     b'<rect width="10" height="10"/></svg>', "x.svg"),
    (b"<svg onload=alert(1)></svg>", "x.png"),
    (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "x.pdf"),
    (b"GIF87a" + b"\x00" * 3, "x.gif"),
    (b"just some text", "x.jpg"),
    (b"\x00\x00\x01\x00\x01\x00\x10\x10", "x.ico"),  # ICO: Pillow reads it, we do not allow it
])
def test_disallowed_or_unrecognised_formats_are_refused(client, data, name):
    resp = _upload(client, data, name)
    assert resp.status_code in (400, 415), resp.get_json()
    _assert_json_error(resp, resp.status_code)


def test_disallowed_format_via_a_real_pillow_image(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "ICO")
    _assert_json_error(_upload(client, buf.getvalue(), "x.ico"), 415)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PPM")
    _assert_json_error(_upload(client, buf.getvalue(), "x.png"), 415)


def test_truncated_and_empty_images_are_400(client, indexed_library):
    jpeg = next(g for g in indexed_library.images if g.format == "JPEG")
    with open(os.path.join(indexed_library.root, *jpeg.rel.split("/")), "rb") as f:
        data = f.read()
    _assert_json_error(_upload(client, data[: len(data) // 2]), 400)
    _assert_json_error(_upload(client, b""), 400)
    _assert_json_error(client.post("/api/search/image", data={},
                                   content_type="multipart/form-data"), 400)


def test_urls_are_never_fetched(client):
    resp = client.post("/api/search/image", json={"url": "http://127.0.0.1:1/x.png"})
    _assert_json_error(resp, 400)
    resp = client.post("/api/search", json={"terms": [{"image": "http://127.0.0.1:1/x.png"}]})
    _assert_json_error(resp, 400)
    resp = client.post("/api/search", json={"terms": [{"url": "http://127.0.0.1:1/x.png"}]})
    _assert_json_error(resp, 400)


# -- files and traversal --------------------------------------------------------------------------
TRAVERSALS = [
    "/api/items/..%2F..%2Fetc%2Fpasswd/file",
    "/api/items/%2e%2e/file",
    "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/api/items/..%252f..%252fetc%252fpasswd/file",
    "/api/items/1%00/file",
    "/api/items/1%2500/file",
    "/api/items/%00/file",
    "/api/items//etc/passwd/file",
    "/api/items/%2Fetc%2Fpasswd/file",
    "/api/items/-1/file",
    "/api/items/0x1/file",
    "/api/items/1.0/file",
    "/api/items/99999999999999999999999/file",
    "/api/items/9223372036854775808/thumbnail",
    "/api/items/1/file/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/items/1/../../../etc/passwd",
    "/api/../../etc/passwd",
    "/api/items/C:%5Cwindows%5Cwin.ini/file",
    "/api/items/%c0%ae%c0%ae/file",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_traversal_variants_are_404(client, url):
    resp = client.get(url)
    _assert_json_error(resp, 404)
    assert b"root:" not in resp.data


def test_query_arguments_cannot_choose_the_file(client, indexed_library):
    g = indexed_library.images[1]
    resp = client.get(f"/api/items/{indexed_library.ids[g.rel]}/file?path=/etc/passwd"
                      f"&file=../../etc/passwd")
    _assert_json_error(resp, 400)  # unknown query parameters are refused outright
    assert b"root:" not in resp.data


def test_symlink_swapped_in_after_indexing_is_404(writable_library, tmp_path):
    from web import create_app

    client = create_app(writable_library.settings,
                        service=writable_library.service).test_client()
    secret = tmp_path / "secret.png"
    g = next(g for g in writable_library.images if g.format == "PNG")
    path = os.path.join(writable_library.root, *g.rel.split("/"))
    with open(path, "rb") as f:
        secret.write_bytes(f.read())  # a valid image, so only the location check can stop it
    item = writable_library.ids[g.rel]
    assert client.get(f"/api/items/{item}/file").status_code == 200
    os.remove(path)
    os.symlink(str(secret), path)
    _assert_json_error(client.get(f"/api/items/{item}/file"), 404)
    _assert_json_error(client.get(f"/api/items/{item}/thumbnail?size=512"), 404)
    # A symlinked folder leading out of the root is also refused.
    g2 = next(x for x in writable_library.images if x.rel.startswith("cool/"))
    item2 = writable_library.ids[g2.rel]
    cool = os.path.join(writable_library.root, "cool")
    outside = tmp_path / "outside_cool"
    os.rename(cool, outside)
    os.symlink(str(outside), cool)
    _assert_json_error(client.get(f"/api/items/{item2}/file"), 404)


def test_skipped_files_are_not_served(writable_library):
    from search.ingest.job import IndexJob
    from web import create_app

    bad = os.path.join(writable_library.root, "warm", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot really")
    lib = writable_library.service.library
    IndexJob(lib, writable_library.service.encoder, writable_library.settings).run(
        [writable_library.root])
    from sqlalchemy import select

    from search.store import MediaItem
    with lib.store.session() as s:
        bad_id = s.scalar(select(MediaItem.id).where(MediaItem.path == bad))
    assert bad_id is not None
    client = create_app(writable_library.settings,
                        service=writable_library.service).test_client()
    for suffix in ("", "/file", "/thumbnail", "/similar"):
        _assert_json_error(client.get(f"/api/items/{bad_id}{suffix}"), 404)


# -- keys -----------------------------------------------------------------------------------------
WRITES = [
    ("post", "/api/index", {"json": {"root": "/tmp"}}),
    ("delete", "/api/items/1", {}),
    ("post", "/api/texts", {"json": {"texts": ["x"], "source": "s"}}),
    ("delete", "/api/texts?source=s", {}),
    ("get", "/api/jobs/1", {}),
]


@pytest.mark.parametrize("method, url, kw", WRITES)
def test_writes_need_a_valid_key(client, method, url, kw):
    call = getattr(client, method)
    _assert_json_error(call(url, **kw), 401)
    _assert_json_error(call(url, headers={"Authorization": "Bearer wrong"}, **kw), 403)
    _assert_json_error(call(url, headers={"Authorization": f"Basic {API_KEY}"}, **kw), 401)
    _assert_json_error(call(url, headers={"Authorization": f"Bearer {API_KEY}x"}, **kw), 403)
    sep = "&" if "?" in url else "?"
    _assert_json_error(call(f"{url}{sep}api_key={API_KEY}", **kw), 400)


def test_writes_are_refused_when_no_keys_are_configured(make_app):
    client = make_app(api_keys=()).test_client()
    _assert_json_error(client.delete("/api/items/1", headers=AUTH), 403)
    _assert_json_error(client.delete("/api/items/1"), 401)


def test_search_open_by_default_and_closable(make_app, client):
    assert client.get("/api/search?q=x").status_code == 200
    closed = make_app(search_requires_key=True).test_client()
    _assert_json_error(closed.get("/api/search?q=x"), 401)
    _assert_json_error(closed.get("/api/items/1/thumbnail"), 401)
    _assert_json_error(closed.get("/api/search?q=x", headers={"Authorization": "Bearer no"}), 403)
    ok = closed.get("/api/search?q=x", headers=AUTH)
    assert ok.status_code == 200
    assert closed.get("/api/health").status_code == 200


def test_key_in_query_string_is_refused_even_for_reads(client):
    for name in ("key", "api_key", "token", "access_token"):
        _assert_json_error(client.get(f"/api/search?q=x&{name}={API_KEY}"), 400)


def test_keys_are_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.delete("/api/items/999999", headers=AUTH)
    client.delete("/api/items/1", headers={"Authorization": "Bearer guessed-key-42"})
    client.get(f"/api/search?q=x&api_key={API_KEY}")
    client.post("/api/texts", json={"texts": [""]}, headers=AUTH)
    assert API_KEY not in caplog.text and "guessed-key-42" not in caplog.text


# -- rate limiting --------------------------------------------------------------------------------
def test_search_is_rate_limited_per_client_with_retry_after(make_app):
    client = make_app(rate_limit=3).test_client()
    for _ in range(3):
        assert client.get("/api/search?q=x").status_code == 200
    resp = client.get("/api/search?q=x")
    _assert_json_error(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1
    other = client.get("/api/search?q=x", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    assert client.get("/api/health").status_code == 200  # only searches are limited


def test_token_bucket_refills():
    from search.errors import RateLimited
    from web.ratelimit import RateLimiter

    now = [0.0]
    lim = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        lim.take("a")
    with pytest.raises(RateLimited) as e:
        lim.take("a")
    assert e.value.retry_after == 1
    now[0] += 2.0
    lim.take("a")
    lim.take("a")
    with pytest.raises(RateLimited):
        lim.take("a")


# -- CORS -----------------------------------------------------------------------------------------
def test_cors_is_off_by_default(client):
    resp = client.get("/api/search?q=x", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_allows_only_configured_origins(make_app):
    client = make_app(cors_origins=("https://ok.example",)).test_client()
    ok = client.get("/api/search?q=x", headers={"Origin": "https://ok.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in ok.headers["Vary"]
    bad = client.get("/api/search?q=x", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers
    pre = client.options("/api/texts", headers={
        "Origin": "https://ok.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert pre.status_code == 200
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]


# -- error hygiene --------------------------------------------------------------------------------
HOSTILE = [
    ("get", "/api/search", {}),
    ("get", "/api/search?q=", {}),
    ("get", "/api/search?q=%00", {}),
    ("get", "/api/search?q=x&k=abc", {}),
    ("get", "/api/search?q=x&k=1e3", {}),
    ("get", "/api/search?q=x&k=100000", {}),
    ("get", "/api/search?q=x&offset=-1", {}),
    ("get", "/api/search?q=x&threshold=nan", {}),
    ("get", "/api/search?q=x&sort=size", {}),
    ("get", "/api/search?q=x&captured_after=yesterday", {}),
    ("get", "/api/search?q=x&captured_after=2021-02-30", {}),
    ("get", "/api/search?q=x&format=svg", {}),
    ("get", "/api/search?q=x&path_prefix=../../etc", {}),
    ("get", "/api/search?q=x&path_prefix=a%00b", {}),
    ("get", "/api/search?q=x&min_width=-5", {}),
    ("get", "/api/search?q=" + "a" * 5000, {}),
    ("get", "/api/items/1/thumbnail?size=99999", {}),
    ("post", "/api/search", {"data": b"{not json", "content_type": "application/json"}),
    ("post", "/api/search", {"data": b"[" * 100_000 + b"]" * 100_000,
                             "content_type": "application/json"}),
    ("post", "/api/search", {"data": b'"just a string"', "content_type": "application/json"}),
    ("post", "/api/search", {"data": b"terms=1", "content_type": "text/plain"}),
    ("post", "/api/search", {"json": {"terms": [{"text": "x", "weight": 1e309}]}}),
    ("post", "/api/search", {"json": {"terms": [{"vector": [1e308] * 32}]}}),
    ("post", "/api/search", {"json": {"terms": [{"vector": [0.0] * 31}]}}),
    ("post", "/api/search", {"json": {"terms": [{"text": "x", "weight": None}]}}),
    ("post", "/api/search", {"json": {"terms": [{"item_id": 2**70}]}}),
    ("post", "/api/search", {"json": {"terms": [{"item_id": True}]}}),
    ("post", "/api/search", {"json": {"terms": "text"}}),
    ("post", "/api/search", {"json": {"terms": [{"text": "x"}] * 100}}),
    ("post", "/api/search", {"data": {"query": "{}"}, "content_type": "multipart/form-data"}),
    ("post", "/api/search", {"data": {"query": "[1]"}, "content_type": "multipart/form-data"}),
    ("post", "/api/search/image", {"json": {"item_id": "1"}}),
    ("post", "/api/search/image", {"json": {"item_id": 1, "k": True}}),
    ("post", "/api/search/image", {"json": {"item_id": 1, "filters": {"format": "PNG"}}}),
    ("post", "/api/search/image", {"json": {"item_id": 1, "k": None}}),
    ("post", "/api/search", {"json": {"terms": [{"text": "x"}], "filters": None}}),
    ("post", "/api/search/texts", {"json": {"item_id": 1, "sort": "date"}}),
    ("put", "/api/search", {}),
    ("patch", "/api/items/1", {}),
    ("get", "/nothing/here", {}),
    ("get", "/api/search?q=x&formt=JPEG", {}),
    ("get", "/api/items/1?verbose=1", {}),
]


@pytest.mark.parametrize("method, url, kw", HOSTILE)
def test_bad_requests_get_json_4xx_without_internals(client, indexed_library, method, url, kw):
    resp = getattr(client, method)(url, **kw)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:300])
    _assert_json_error(resp, resp.status_code)
    text = resp.get_data(as_text=True)
    assert indexed_library.root not in text and indexed_library.data_dir not in text


def test_no_response_leaks_server_paths(client, indexed_library):
    item = indexed_library.ids[indexed_library.images[2].rel]
    for url in ("/api/search?q=x&k=60", f"/api/items/{item}", f"/api/items/{item}/similar",
                "/api/health"):
        text = client.get(url).get_data(as_text=True)
        assert indexed_library.root not in text and indexed_library.data_dir not in text
    texts = client.post("/api/search/texts", json={"item_id": item, "k": 50})
    assert indexed_library.root not in texts.get_data(as_text=True)


def test_model_unavailable_is_503_not_500(tmp_path, make_settings):
    from web import create_app

    settings = make_settings(str(tmp_path / "data"), model="no-such-model-anywhere")
    client = create_app(settings).test_client()
    for url in ("/api/health", "/api/search?q=x", "/api/items/1"):
        _assert_json_error(client.get(url), 503)
    assert "no-such-model" in client.get("/api/health").get_json()["error"]


# -- browser sessions (key exchanged for a cookie) -------------------------------------------------
def _session_cookie(resp) -> str:
    """The value of the session cookie set by ``resp`` (its Set-Cookie header parsed by hand)."""
    from web.sessions import SESSION_COOKIE

    headers = [h for h in resp.headers.getlist("Set-Cookie")
               if h.startswith(SESSION_COOKIE + "=")]
    assert len(headers) == 1, resp.headers.getlist("Set-Cookie")
    return headers[0].split(";", 1)[0].split("=", 1)[1]


@pytest.fixture(scope="module")
def private(make_app):
    """An app whose reads need a key (or a session)."""
    return make_app(search_requires_key=True)


def _with_cookie(app, value: str):
    from web.sessions import SESSION_COOKIE

    client = app.test_client()
    client.set_cookie(SESSION_COOKIE, value)
    return client


def test_session_cookie_attributes_and_what_it_opens(private, indexed_library):
    from web.sessions import SESSION_COOKIE, SESSION_MAX_AGE

    client = private.test_client()
    resp = client.post("/api/session", headers=AUTH)
    assert resp.status_code == 204 and not resp.data
    assert resp.headers["Cache-Control"] == "no-store"
    header = resp.headers["Set-Cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= set(attrs)
    assert attrs["path"] == "Path=/" and attrs["samesite"] == "SameSite=Strict"
    assert attrs["max-age"] == f"Max-Age={SESSION_MAX_AGE}"
    assert "secure" not in attrs  # plain HTTP here; see the HTTPS test below
    value = _session_cookie(resp)
    assert API_KEY not in value and API_KEY.encode().hex() not in value
    # The test client keeps the cookie: reads now work without the header...
    assert client.get("/api/search?q=a red square").status_code == 200
    item = indexed_library.ids[indexed_library.images[0].rel]
    thumb = client.get(f"/api/items/{item}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert thumb.headers["Cache-Control"].startswith("private")
    assert client.get(f"/api/items/{item}").status_code == 200
    assert client.get(f"/api/items/{item}/similar").status_code == 200
    assert client.post("/api/search/image", json={"item_id": item}).status_code == 200
    state = client.get("/api/session").get_json()
    assert state["active"] is True and state["key_required"] is True
    assert state["expires_at"] > 0
    # ...and a bad header still fails next to the valid cookie.
    _assert_json_error(client.get("/api/search?q=x", headers={"Authorization": "Bearer no"}), 403)
    _assert_json_error(client.get("/api/search?q=x", headers={"Authorization": "Basic x"}), 401)
    assert client.get_cookie(SESSION_COOKIE) is not None


def test_session_cookie_is_secure_over_https(private):
    resp = private.test_client().post("/api/session", headers=AUTH,
                                      base_url="https://clipsearch.example")
    assert resp.status_code == 204
    assert "secure" in [a.strip().lower() for a in resp.headers["Set-Cookie"].split(";")]


@pytest.mark.parametrize("method, url, kw", WRITES)
def test_session_cookie_never_authorises_a_write(private, method, url, kw):
    client = private.test_client()
    assert client.post("/api/session", headers=AUTH).status_code == 204
    _assert_json_error(getattr(client, method)(url, **kw), 401)


def test_session_needs_a_valid_key(private):
    client = private.test_client()
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 403),
                            ({"Authorization": f"Basic {API_KEY}"}, 401)):
        resp = client.post("/api/session", headers=headers)
        _assert_json_error(resp, status)
        assert "Set-Cookie" not in resp.headers
    _assert_json_error(client.post(f"/api/session?key={API_KEY}"), 400)
    _assert_json_error(client.get("/api/search?q=x"), 401)  # nothing was kept


def _token(app, key: str, issued: float) -> str:
    """A session token for ``key`` signed with ``app``'s secret (read from its data
    directory), as if issued at unix time ``issued``."""
    from itsdangerous import TimestampSigner, URLSafeTimedSerializer

    from web.sessions import SALT, SessionSigner, load_secret

    class IssuedThen(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(issued)

    secret = load_secret(app.extensions["clipsearch"].settings.data_dir)
    return URLSafeTimedSerializer(secret, salt=SALT, signer=IssuedThen).dumps(
        {"k": SessionSigner(secret).fingerprint(key)})


def test_expired_tampered_and_malformed_cookies_are_no_credentials(private):
    import time

    from web.sessions import SESSION_MAX_AGE, SessionSigner

    now = time.time()
    good = _token(private, API_KEY, now - 60)
    assert _with_cookie(private, good).get("/api/search?q=x").status_code == 200
    head, sig = good.rsplit(".", 1)
    flipped = head + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B")
    bad = [
        _token(private, API_KEY, now - SESSION_MAX_AGE - 1),  # expired
        _token(private, API_KEY, now + 3600),  # issued in the future
        flipped,  # tampered signature
        SessionSigner(os.urandom(32)).issue(API_KEY),  # signed with another server's secret
        _token(private, "not-the-key-0123456789", now),  # made for a key not configured
        good.upper(), good + "0", "." + sig, head + ".", "", "9" * 3000,
        "-" + good, good + "." + sig,
    ]
    for value in bad:
        client = _with_cookie(private, value)
        _assert_json_error(client.get("/api/search?q=x"), 401)
        assert client.get("/api/session").get_json()["active"] is False


def test_removing_a_key_revokes_its_sessions(make_app):
    other = "other-key-0123456789"
    first = make_app(search_requires_key=True, api_keys=(API_KEY, other))
    resp = first.test_client().post("/api/session", headers=AUTH)
    value = _session_cookie(resp)
    assert _with_cookie(first, value).get("/api/search?q=x").status_code == 200
    # Another app (think: another worker or a restart) with the same keys accepts it...
    same = make_app(search_requires_key=True, api_keys=(other, API_KEY))
    assert _with_cookie(same, value).get("/api/search?q=x").status_code == 200
    # ...and one without that key does not.
    rotated = make_app(search_requires_key=True, api_keys=(other,))
    _assert_json_error(_with_cookie(rotated, value).get("/api/search?q=x"), 401)


def test_delete_session_clears_the_cookie(private):
    from web.sessions import SESSION_COOKIE

    client = private.test_client()
    assert client.post("/api/session", headers=AUTH).status_code == 204
    assert client.get("/api/search?q=x").status_code == 200
    resp = client.delete("/api/session")  # no key needed
    assert resp.status_code == 204
    header = resp.headers["Set-Cookie"]
    assert header.startswith(SESSION_COOKIE + "=;") and "Max-Age=0" in header
    assert client.get_cookie(SESSION_COOKIE) is None
    _assert_json_error(client.get("/api/search?q=x"), 401)
    assert client.get("/api/session").get_json() == {"active": False, "expires_at": None,
                                                     "key_required": True}


def test_session_requests_are_rate_limited(make_app):
    client = make_app(search_requires_key=True, rate_limit=2).test_client()
    _assert_json_error(client.post("/api/session", headers={"Authorization": "Bearer a"}), 403)
    _assert_json_error(client.post("/api/session", headers={"Authorization": "Bearer b"}), 403)
    resp = client.post("/api/session", headers=AUTH)  # guesses spent the bucket
    _assert_json_error(resp, 429)
    assert "Set-Cookie" not in resp.headers
    assert client.delete("/api/session").status_code == 204  # logging out always works


def test_session_lifetime_is_a_setting(make_app):
    """CLIPSEARCH_SESSION_HOURS: the cookie's Max-Age, and cookies older than it refused."""
    import time

    from web.sessions import SESSION_COOKIE

    app = make_app(search_requires_key=True, session_hours=1)
    resp = app.test_client().post("/api/session", headers=AUTH)
    assert resp.status_code == 204 and "Max-Age=3600" in resp.headers["Set-Cookie"]
    client = app.test_client()
    client.set_cookie(SESSION_COOKIE, _token(app, API_KEY, time.time() - 7200))
    assert client.get("/api/search?q=red").status_code == 401   # 2 h old: too old for 1 h
    client.set_cookie(SESSION_COOKIE, _token(app, API_KEY, time.time() - 1800))
    assert client.get("/api/search?q=red").status_code == 200
