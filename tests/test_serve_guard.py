"""The endpoint's guards on a tiny app with the endpoint's routes: the bearer token, the Host check of a loopback
server, CORS only when asked for, and the page asking for the key."""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from kennel.errors import UsageError
from kennel.serve.guard import guard, guard_stack, host_name

TOKEN = "s3cret-Token_for-tests"
LOCAL = "http://127.0.0.1:8080"
PAGE = Path(__file__).resolve().parents[1] / "src" / "kennel" / "serve" / "static" / "index.html"
PROTECTED = [
    ("POST", "/invocations"),
    ("POST", "/predict"),
    ("GET", "/metrics"),
    ("GET", "/model"),
    ("GET", "/v2/models/dogs"),
    ("GET", "/v2/models/dogs/ready"),
    ("GET", "/anything-else"),
]
OPEN = ["/ping", "/v2/health/live", "/v2/health/ready", "/", "/static/x", "/docs", "/openapi.json"]


def tiny_app() -> FastAPI:
    """The endpoint's routes, each answering its own path; ``app.state.bodies`` counts the bodies read."""
    app = FastAPI()
    app.state.bodies = 0

    async def echo(request: Request) -> dict:
        if request.method == "POST":
            await request.body()
            request.app.state.bodies += 1
        return {"path": request.url.path}

    for path in ("/ping", "/v2/health/live", "/v2/health/ready", "/metrics", "/model", "/", "/static/x"):
        app.add_api_route(path, echo, methods=["GET"])
    app.add_api_route("/v2/models/{name:path}", echo, methods=["GET"])
    app.add_api_route("/invocations", echo, methods=["POST"])
    app.add_api_route("/predict", echo, methods=["POST"])

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return app


def client(base_url: str = LOCAL, **options) -> TestClient:
    options = {"token": TOKEN, "loopback": True} | options
    return TestClient(guard(tiny_app(), **options), base_url=base_url)


def call(client: TestClient, method: str, path: str, **kwargs):
    return client.request(method, path, content=b"photo" if method == "POST" else None, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_protected_routes_need_the_right_token() -> None:
    with client() as c:
        for method, path in PROTECTED:
            missing = call(c, method, path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert missing.json()["error"]["code"] == "unauthorized"
            wrong = call(c, method, path, headers=bearer("not-" + TOKEN))
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized", path
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
            for other_scheme in (f"Basic {TOKEN}", TOKEN, "Bearer ", f"Bearer{TOKEN}"):
                assert call(c, method, path, headers={"Authorization": other_scheme}).status_code == 401
            assert call(c, method, path, headers={"Authorization": f"bearer  {TOKEN}"}).status_code != 401
            right = call(c, method, path, headers=bearer(TOKEN))
            assert right.status_code == (404 if path == "/anything-else" else 200), path
        assert c.app.app.app.state.bodies == 4  # the refused uploads were never read: only the 2 routes x 2 let in


def test_open_routes_need_no_token() -> None:
    with client() as c:
        for path in OPEN:
            assert c.get(path).status_code == 200, path


def test_no_token_turns_the_check_off() -> None:
    with client(token=None) as c:
        for method, path in PROTECTED[:-1]:
            assert call(c, method, path).status_code == 200, path


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with client() as c:
        assert c.get("/model", headers=bearer(TOKEN)).status_code == 200
        assert c.get("/model", headers=bearer("guess")).status_code == 401
    assert seen == [(TOKEN.encode(), TOKEN.encode()), (b"guess", TOKEN.encode())]


def test_the_token_is_in_no_log_record_and_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = []
    with client() as c:
        for method, path in PROTECTED + [("GET", p) for p in OPEN]:
            for headers in ({}, bearer("wrong"), bearer(TOKEN)):
                answers.append(call(c, method, path, headers=headers))
        answers.append(c.get("/model", headers={"Host": "evil.example"}))
    for answer in answers:
        assert TOKEN not in answer.text
        assert all(TOKEN not in value for value in answer.headers.values())
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    assert TOKEN not in repr(guard_stack(token=TOKEN, loopback=True))


def test_a_websocket_without_the_token_is_closed() -> None:
    with client(allowed_hosts=["testserver"]) as c:  # the test client's WebSocket sends Host testserver
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws"):
            pass
        with c.websocket_connect("/ws", headers=bearer(TOKEN)) as ws:
            assert ws.receive_text() == "hello"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST:8080", "localhost"),
        ("localhost.:80", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("evil.example:8080", "evil.example"),
        ("[::1]evil", "[::1]evil"),
        ("[::1]:80x", "[::1]:80x"),
        ("localhost:80x", "localhost:80x"),
    ],
)
def test_host_name(value: str, name: str) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    "base_url", ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080", "http://LocalHost"]
)
def test_a_loopback_server_answers_loopback_names(base_url: str) -> None:
    with client(base_url) as c:
        assert c.get("/ping").status_code == 200
        assert c.get("/model", headers=bearer(TOKEN)).status_code == 200


@pytest.mark.parametrize("base_url", ["http://evil.example", "http://evil.example:8080", "http://testserver"])
def test_a_loopback_server_refuses_other_names(base_url: str) -> None:
    with client(base_url) as c:
        for path in ("/ping", "/", "/model"):
            refused = c.get(path, headers=bearer(TOKEN))
            assert refused.status_code == 421
            error = refused.json()["error"]
            assert error["code"] == "bad_host"
            assert base_url.split("//")[1] in error["message"] and "--allowed-host" in error["message"]


def test_allowed_hosts_are_added_to_the_loopback_names() -> None:
    with client("http://dogs.internal:8080", allowed_hosts=["Dogs.Internal"]) as c:
        assert c.get("/ping").status_code == 200
    with client(allowed_hosts=["dogs.internal"]) as c:
        assert c.get("/ping").status_code == 200
    with client("http://other.internal", allowed_hosts=["dogs.internal"]) as c:
        assert c.get("/ping").status_code == 421


def test_a_reachable_server_answers_any_host() -> None:
    with client("http://evil.example", loopback=False) as c:
        assert c.get("/ping").status_code == 200
        assert c.get("/model").status_code == 401
        assert c.get("/model", headers=bearer(TOKEN)).status_code == 200


def asgi_get(app, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The status of a GET sent straight to the ASGI app, with exactly ``headers`` (no Host unless given)."""
    scope = {"type": "http", "http_version": "1.0", "method": "GET", "path": path, "raw_path": path.encode()}
    scope |= {"query_string": b"", "headers": headers, "scheme": "http", "server": ("127.0.0.1", 8080)}
    scope |= {"client": ("127.0.0.1", 5000), "root_path": ""}
    statuses = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return statuses[0]


def test_a_request_without_a_host_header_is_let_through_to_the_token_check() -> None:
    app = guard(tiny_app(), token=TOKEN, loopback=True)
    assert asgi_get(app, "/ping", []) == 200
    assert asgi_get(app, "/model", []) == 401
    assert asgi_get(app, "/model", [(b"authorization", f"Bearer {TOKEN}".encode())]) == 200
    assert asgi_get(app, "/ping", [(b"host", b"")]) == 421


def preflight(c: TestClient, origin: str):
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    return c.options("/invocations", headers=headers | {"Access-Control-Request-Headers": "authorization"})


@pytest.mark.parametrize("token", [TOKEN, None])
def test_no_cors_headers_by_default(token: str | None) -> None:
    with client(token=token) as c:
        answers = [
            c.get("/ping", headers={"Origin": "https://evil.example"}),
            c.get("/model", headers={"Origin": "https://evil.example"} | bearer(TOKEN)),
            preflight(c, "https://evil.example"),
        ]
    for answer in answers:
        assert not [name for name in answer.headers if name.lower().startswith("access-control-")]


def test_cors_for_the_origin_given() -> None:
    with client(cors_origins=["https://app.example"]) as c:
        allowed = preflight(c, "https://app.example")  # no token: a browser's preflight never carries one
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = c.get("/model", headers={"Origin": "https://app.example"})
        assert refused.status_code == 401  # with the header, so that the page can read why
        assert refused.headers["access-control-allow-origin"] == "https://app.example"
        ok = c.get("/model", headers={"Origin": "https://app.example"} | bearer(TOKEN))
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/model", headers={"Origin": "https://evil.example"} | bearer(TOKEN))
        assert "access-control-allow-origin" not in other.headers
        assert preflight(c, "https://evil.example").status_code == 400


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "https://app.example/path", "ftp://x"])
def test_an_origin_that_could_never_match_is_a_usage_error(origin: str) -> None:
    with pytest.raises(UsageError, match="--cors"):
        guard_stack(token=None, loopback=True, cors_origins=[origin])


def test_the_stack_order() -> None:
    names = [m.cls.__name__ for m in guard_stack(token=TOKEN, loopback=True, cors_origins=["*"])]
    assert names == ["HostCheck", "CORSMiddleware", "TokenAuth"]
    assert [m.cls.__name__ for m in guard_stack(token=TOKEN, loopback=False)] == ["TokenAuth"]


def test_the_page_sends_the_key_and_writes_server_text_as_text() -> None:
    page = PAGE.read_text()
    assert "innerHTML" not in page and "outerHTML" not in page and "insertAdjacentHTML" not in page
    assert "sessionStorage" in page and '"Bearer "' in page
    assert page.count("fetch(") == 1  # every call goes through the one that adds the key


CHROMIUM = None
if importlib.util.find_spec("playwright") is not None:
    from kennel.browser import CHROMIUM_ARGS, find_chromium

    CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="playwright or Chromium is absent")
def test_the_page_asks_for_the_key_once_and_keeps_it(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright
    from test_client import photo_bytes, running, stand_in_app

    photo = tmp_path / "rex.jpg"
    photo.write_bytes(photo_bytes((20, 240, 30), size=64))
    with running(guard(stand_in_app(), token=TOKEN, loopback=True)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.goto(url + "/")
        page.wait_for_selector("#key-form", state="visible")
        page.fill("#key", "wrong")
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('key-help').textContent.includes('refused')")
        assert page.is_visible("#key-form")
        page.fill("#key", TOKEN)
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('model-line').textContent.includes('stand-in')")
        assert page.is_hidden("#key-form")
        assert page.evaluate("sessionStorage.getItem('kennel-key')") == TOKEN
        page.reload()  # same tab: the key is kept, nothing is asked
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#breeds li")
        assert page.is_hidden("#key-form")
        assert page.inner_text("#breeds .label >> nth=0") == "Bulldog"
        browser.close()
