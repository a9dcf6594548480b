"""The browser client served by SocketIOServer (volleyio.socketio.client_files): the
shipped copy is the pinned npm release, the HTTP behaviour (ETag/304, cache headers,
content types, gzip) through sio.serve and the ASGI mount, and headless Chromium
loading a page whose only client code is ``<script src="/socket.io/socket.io.js">``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, chromium_path, node_path, playwright_available, require_peer
from test_asgi import http, hypercorn_available, serve_in_process
from test_socketio_interop import PEERS_DIR, Record
from volleyio.engineio import HttpRequest
from volleyio.socketio.client_files import CLIENT_FILE_NAMES, ClientFiles, client_version, read_client_file

sys.path.insert(0, str(PEERS_DIR))
from asgi_apps import PAGE, make_starlette  # noqa: E402

DIST = JS_DIR / "node_modules" / "socket.io-client" / "dist"
SHIPPED = Path(__file__).parent.parent / "src" / "volleyio" / "socketio" / "client_dist"
#: Where to keep the screenshots for a human to look at (unset: only tmp_path).
SCREENSHOT_DIR = os.environ.get("VOLLEYIO_SCREENSHOT_DIR")
ALL_FILES = [name + suffix for name in CLIENT_FILE_NAMES for suffix in ("", ".map")]


def get(path: str, **headers: str) -> HttpRequest:
    return HttpRequest("GET", path, {}, {k.replace("_", "-"): v for k, v in headers.items()})


# ---------------------------------------------------------------------------- the shipped copy


@pytest.mark.interop
def test_shipped_copy_is_the_pinned_release() -> None:
    require_peer(DIST.is_dir(), "socket.io-client in tests/js/node_modules (npm ci in tests/js)")
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/socket.io-client"]["version"]
    installed = json.loads((DIST.parent / "package.json").read_text())["version"]
    assert client_version() == pinned == installed
    for name in ALL_FILES:
        assert read_client_file(name) == (DIST / name).read_bytes(), name
    assert read_client_file("LICENSE") == (DIST.parent / "LICENSE").read_bytes()
    assert f"Socket.IO v{pinned}".encode() in read_client_file("socket.io.js")[:100]


def test_package_data_lists_the_files() -> None:
    """pyproject's package-data ships client_dist/* (wheel and sdist get the files)."""
    root = Path(__file__).parent.parent
    if not (root / "pyproject.toml").is_file() or not SHIPPED.is_dir():
        pytest.skip("runs from a source checkout")
    assert '"socketio/client_dist/*"' in (root / "pyproject.toml").read_text()
    if (root / "MANIFEST.in").is_file():
        assert "graft src/volleyio/socketio/client_dist" in (root / "MANIFEST.in").read_text()
    assert {p.name for p in SHIPPED.iterdir()} >= {*ALL_FILES, "LICENSE", "VERSION", "__init__.py"}


# ---------------------------------------------------------------------------- the responder


def test_responses() -> None:
    files = ClientFiles("/socket.io/")
    for name in ALL_FILES:
        response = files.respond(get("/socket.io/" + name))
        assert response is not None and response.status == 200
        assert response.body == read_client_file(name)
        assert response.header("Content-Type") == (
            "application/json; charset=utf-8" if name.endswith(".map") else "application/javascript; charset=utf-8"
        )
        assert response.header("ETag") == f'"{client_version()}"'
        assert response.header("Cache-Control") == "public, max-age=0"
        assert response.header("Vary") == "Accept-Encoding"
        assert response.header("Content-Length") == str(len(response.body))
    # Not ours: the Engine.IO endpoint gets these.
    for path in ("/socket.io/", "/socket.io/socket.io.msgpack.min.js", "/socket.io/x.js", "/other/socket.io.js",
                 "/socket.io/socket.io.js/"):
        assert files.respond(get(path)) is None
    upgrade = HttpRequest("GET", "/socket.io/socket.io.js", {}, {}, websocket_upgrade=True)
    assert files.respond(upgrade) is None
    post = files.respond(HttpRequest("POST", "/socket.io/socket.io.js", {}, {}))
    assert post is not None and post.status == 405 and post.header("Allow") == "GET, HEAD"
    assert post.header("X-Content-Type-Options") == "nosniff"  # as the core's own errors


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [('"4.8.4"', 304), ('W/"4.8.4"', 304), ('"1.0", "4.8.4"', 304), ("*", 304), ('"4.8.3"', 200), ("4.8.4", 200)],
)
def test_conditional(if_none_match: str, status: int) -> None:
    assert client_version() == "4.8.4"
    response = ClientFiles("/socket.io").respond(get("/socket.io/socket.io.min.js", if_none_match=if_none_match))
    assert response is not None and response.status == status
    if status == 304:
        assert response.body == b"" and response.header("ETag") == '"4.8.4"'
        # A 304's Content-Length is the 200's (RFC 9110 8.6), never 0.
        assert response.header("Content-Length") == str(len(read_client_file("socket.io.min.js")))


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True), ("gzip;q=0", False),
     ("*;q=0", False), ("br", False), ("identity", False), ("*, gzip;q=0", False)],
)
def test_gzip(accept: str, gzipped: bool) -> None:
    response = ClientFiles("/socket.io/").respond(get("/socket.io/socket.io.js", accept_encoding=accept))
    assert response is not None and response.status == 200
    assert (response.header("Content-Encoding") == "gzip") is gzipped
    plain = read_client_file("socket.io.js")
    assert (gzip.decompress(response.body) if gzipped else response.body) == plain
    if gzipped:
        assert len(response.body) < len(plain) // 3


# ---------------------------------------------------------------------------- through the servers


async def curl(url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    return await http(url, *args)


async def check_served(base: str) -> None:
    status, headers, body = await curl(base + "/socket.io/socket.io.js")
    assert status == 200 and body == read_client_file("socket.io.js")
    assert headers["content-type"] == "application/javascript; charset=utf-8" and headers["etag"] == '"4.8.4"'
    status, headers, body = await curl(base + "/socket.io/socket.io.js", "-H", 'If-None-Match: W/"4.8.4"')
    assert status == 304 and body == b""
    status, headers, body = await curl(base + "/socket.io/socket.io.esm.min.js", "--compressed")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert body == read_client_file("socket.io.esm.min.js")  # curl decoded it
    status, headers, body = await curl(base + "/socket.io/socket.io.min.js.map", "-I")  # HEAD
    assert status == 200 and body == b"" and headers["content-type"] == "application/json; charset=utf-8"
    assert headers["content-length"] == str(len(read_client_file("socket.io.min.js.map")))
    # The Engine.IO endpoint is still there, on the same path.
    status, _, body = await curl(base + "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith(b'0{"sid":')


@pytest.mark.interop
async def test_served_by_sio_serve() -> None:
    sio = vt.SocketIOServer()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
        base = f"http://127.0.0.1:{server.port}"
        await check_served(base)
        sio.serve_client = False
        status, _, body = await curl(base + "/socket.io/socket.io.js")
        assert status == 400 and json.loads(body) == {"code": 0, "message": "Transport unknown"}
        nursery.cancel_scope.cancel()
    assert vt.SocketIOServer(serve_client=False).serve_client is False


async def _exchange(stream: trio.SocketStream, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a kept-alive connection; the response read by its Content-Length."""
    await stream.send_all(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    status = int(lines[0].split()[1])
    length = 0 if status == 304 else int(headers["content-length"])  # a 304 has no body
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk
        body += chunk
    assert len(body) == length  # nothing beyond this response
    return status, headers, body


@pytest.mark.interop
async def test_served_by_a_serve_mount_on_the_http_loop() -> None:
    # sio.app mounted beside a WebSocket handler on serve(): the one HTTP/1.1 loop reads
    # the requests; client files, the Engine.IO endpoint and errors share a connection.
    sio = vt.SocketIOServer()

    async def handler(ws: Any) -> None:
        await ws.close()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(vt.serve, handler, "127.0.0.1", 0, mounts={sio.path: sio.app}))
        await check_served(f"http://127.0.0.1:{server.port}")
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
                get_js = b"GET /socket.io/socket.io.min.js HTTP/1.1\r\n" + host + b"Accept-Encoding: gzip\r\n\r\n"
                status, headers, body = await _exchange(stream, get_js)
                assert status == 200 and headers["content-encoding"] == "gzip" and headers["etag"] == '"4.8.4"'
                assert gzip.decompress(body) == read_client_file("socket.io.min.js")
                assert headers.get("connection") != "close"
                status, headers, body = await _exchange(
                    stream, b"GET /socket.io/socket.io.min.js HTTP/1.1\r\n" + host + b'If-None-Match: "4.8.4"\r\n\r\n')
                assert status == 304 and body == b""
                assert headers["content-length"] == str(len(read_client_file("socket.io.min.js")))
                status, headers, body = await _exchange(
                    stream, b"POST /socket.io/socket.io.js HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n")
                assert status == 405 and headers["x-content-type-options"] == "nosniff"
                assert headers["allow"] == "GET, HEAD"
                status, headers, body = await _exchange(
                    stream, b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n" + host + b"\r\n")
                assert status == 200 and body.startswith(b'0{"sid":')
        nursery.cancel_scope.cancel()


@pytest.mark.interop
async def test_served_by_the_asgi_mount() -> None:
    require_peer(hypercorn_available(), "hypercorn, starlette and quart-trio (the interop extra)")
    app = make_starlette(Record(), [])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_in_process(app, nursery, stop)
        await check_served(base)
        stop.set()


# ---------------------------------------------------------------------------- headless Chromium


@pytest.fixture
def browser_env(speedups_impl: str) -> dict[str, str]:
    if speedups_impl != "compiled" and os.environ.get("CI", "").lower() != "true":
        pytest.skip("the browser check runs with the compiled speedups only (it does not exercise them)")
    require_peer(playwright_available(), "node with tests/js/node_modules/playwright-core (npm ci in tests/js)")
    chromium = chromium_path()
    require_peer(chromium is not None, "chromium")
    assert chromium is not None
    return {**os.environ, "CHROMIUM_PATH": chromium}


async def run_page(env: dict[str, str], url: str, screenshot: Path) -> dict[str, Any]:
    node = node_path()
    assert node is not None
    with trio.fail_after(90):
        result = await trio.run_process([node, "sio_script_page.js", url, str(screenshot)], cwd=str(JS_DIR),
                                        env=env, capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"sio_script_page.js printed nothing; stderr: {result.stderr.decode()[-3000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data["error"]
    assert result.returncode == 0 and data["ok"] is True, data
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(SCREENSHOT_DIR) / screenshot.name)
    return data


def check_page(out: dict[str, Any], framework: str) -> None:
    assert out["ioLoaded"] is True and out["consoleErrors"] == []
    assert out["reply"] == "hello from the page" and out["transport"] == "websocket"
    assert out["heading"] == f"Page served by {framework}"
    assert out["status"] == "connected over websocket; echo: hello from the page"
    script = out["scripts"][0]
    assert script["url"].endswith("/socket.io/socket.io.js") and script["status"] == 200
    assert script["type"] == "application/javascript; charset=utf-8" and script["etag"] == '"4.8.4"'
    assert script["encoding"] == "gzip"  # Chromium accepts gzip


@pytest.mark.interop
async def test_browser_page_on_sio_serve(browser_env: dict[str, str], tmp_path: Path) -> None:
    sio = vt.SocketIOServer()

    @sio.on("echo")
    async def echo(socket: vt.Socket, text: str) -> str:
        return text

    async def page(request: vt.Request) -> vt.Response | None:
        if request.path != "/page":
            return None
        body = PAGE.replace(b"FRAMEWORK", b"volleyio sio.serve")
        return vt.Response(200, body, [("content-type", "text/html; charset=utf-8")])

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sio.serve, "127.0.0.1", 0, process_request=page))
        out = await run_page(browser_env, f"http://127.0.0.1:{server.port}/page", tmp_path / "sio-serve-page.png")
        nursery.cancel_scope.cancel()
    check_page(out, "volleyio sio.serve")


@pytest.mark.interop
async def test_browser_page_on_the_asgi_mount(browser_env: dict[str, str], tmp_path: Path) -> None:
    require_peer(hypercorn_available(), "hypercorn, starlette and quart-trio (the interop extra)")
    record = Record()
    app = make_starlette(record, [])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_in_process(app, nursery, stop)
        out = await run_page(browser_env, base + "/page", tmp_path / "asgi-starlette-page.png")
        stop.set()
    check_page(out, "Starlette")
    assert any(sid == out["id"] for _, sid, _, _ in record.connects)
