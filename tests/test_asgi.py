"""volleyio.asgi under hypercorn's trio worker, mounted in front of a Starlette app and a
Quart-trio app (tests/peers/asgi_apps.py): the official socket.io-client (Node) and
python-socketio's AsyncClient in polling, WebSocket and upgrade modes run the scenario
contract of tests/test_socketio_interop.py; the frameworks' own routes keep working; a
plain WebSocket route is driven by the ``websockets`` client; the lifespan starts and
stops volleyio's tasks and the wrapped app's; the limits are those of ``sio.serve``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from _trio_support import JS_DIR, require_peer
from test_socketio_interop import (  # noqa: F401 - node, python_socketio are fixtures
    PEERS_DIR,
    Record,
    check_common,
    node,
    node_argv,
    python_argv,
    python_socketio,
    run_driver,
)

sys.path.insert(0, str(PEERS_DIR))
from asgi_apps import FRAMEWORKS  # noqa: E402

from volleyio.asgi import ASGIApp, ASGIWebSocket, WebSocketRoute  # noqa: E402
from volleyio.trio import SocketIOServer  # noqa: E402

pytestmark = pytest.mark.interop


def hypercorn_available() -> bool:
    try:
        import hypercorn.trio  # noqa: F401
        import quart_trio  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def hypercorn() -> None:
    require_peer(hypercorn_available(), "hypercorn, starlette and quart-trio (the interop extra)")


class Served:
    def __init__(self, url: str, record: Record, events: list[str], app: Any) -> None:
        self.url = url
        self.record = record
        self.events = events
        self.app = app

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


async def serve_in_process(app: Any, nursery: trio.Nursery, stop: trio.Event, **options: Any) -> str:
    """``hypercorn.trio.serve`` (what ``--worker-class trio`` runs) on a free loopback port."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    config.accesslog = None
    for key, value in options.items():
        setattr(config, key, value)
    binds: list[str] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    return binds[0]


async def http(url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """One request with curl (a real HTTP client): status, headers, body."""
    result = await trio.run_process(["curl", "-s", "-i", "--max-time", "20", *args, url], capture_stdout=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def curl_status(url: str, *args: str) -> int:
    status, _, _ = await http(url, *args)
    return status


@pytest.fixture(params=sorted(FRAMEWORKS))
async def served(request: pytest.FixtureRequest, hypercorn: None) -> AsyncIterator[Served]:
    record = Record()
    events: list[str] = []
    app = FRAMEWORKS[request.param](record, events)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve_in_process(app, nursery, stop)
        try:
            yield Served(url, record, events, app)
        finally:
            stop.set()


# ---------------------------------------------------------------------------- official clients


NODE_SCENARIOS = ("connect", "acks", "binary", "order")


@pytest.mark.parametrize("scenario", NODE_SCENARIOS)
@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
async def test_node_client(served: Served, node: str, mode: str, scenario: str) -> None:
    out = await run_driver(node_argv(node, served.url, mode, scenario), JS_DIR)
    check_common(out, mode, scenario, served.record, "node")
    status, _, body = await http(served.url + "/hello")
    assert status == 200 and body.startswith(b"hello from")


@pytest.mark.parametrize("scenario", ["connect", "acks", "rooms"])
@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
async def test_python_client(served: Served, python_socketio: str, mode: str, scenario: str) -> None:
    out = await run_driver(python_argv(python_socketio, served.url, mode, scenario), PEERS_DIR)
    check_common(out, mode, scenario, served.record, "python")


async def test_framework_routes_and_client_files(served: Served) -> None:
    status, _, body = await http(served.url + "/hello")
    assert status == 200 and body in (b"hello from starlette", b"hello from quart")
    assert await curl_status(served.url + "/elsewhere") == 404  # the framework's own 404
    status, headers, body = await http(served.url + "/socket.io/socket.io.min.js")
    assert status == 200 and headers["content-type"] == "application/javascript; charset=utf-8"
    assert headers["etag"] == '"4.8.4"' and headers["cache-control"] == "public, max-age=0"
    assert b"Socket.IO v4.8.4" in body[:200]
    assert await curl_status(served.url + "/socket.io/socket.io.min.js", "-H", 'If-None-Match: "4.8.4"') == 304
    status, headers, _ = await http(served.url + "/socket.io/socket.io.esm.min.js.map")
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"


async def test_hypercorn_trio_worker_subprocess(hypercorn: None, node: str) -> None:
    """``hypercorn --worker-class trio`` itself (the CLI) serving ``asgi_apps:starlette_app()``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PEERS_DIR.parent), str(PEERS_DIR)])}
    argv = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:0",
            "--graceful-timeout", "2", "asgi_apps:starlette_app()"]
    process = await trio.lowlevel.open_process(argv, cwd=str(PEERS_DIR), env=env, stderr=-1, stdout=-1)
    try:
        assert process.stderr is not None
        log = b""
        with trio.fail_after(30):
            while b"Running on http://" not in log or not log.endswith(b"\n"):
                chunk = await process.stderr.receive_some(4096)
                assert chunk, f"hypercorn exited: {log.decode(errors='replace')}"
                log += chunk
        line = next(line for line in log.decode().splitlines() if "Running on http://" in line)
        url = line.split("Running on ")[1].split()[0]
        status, _, body = await http(url + "/hello")
        assert (status, body) == (200, b"hello from starlette")
        out = await run_driver(node_argv(node, url, "upgrade", "acks"), JS_DIR)
        check_common(out, "upgrade", "acks", None, "node")
    finally:
        process.terminate()  # by PID: this process only (SIGTERM: hypercorn shuts down)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------------------- plain WebSocket routes


async def test_websocket_route_with_websockets_client(served: Served) -> None:
    from websockets.asyncio.client import connect  # noqa: F401 - present: the test extra

    url = served.url.replace("http://", "ws://") + "/ws/echo"
    out = await run_websockets_client(url, ["hello", b"\x00\x01binary", "é" * 1000])
    assert out["echoes"] == ["hello", {"bin": "0001" + b"binary".hex()}, "é" * 1000]


WS_CLIENT = r"""
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

async def main():
    cfg = json.loads(sys.argv[1])
    out = {}
    kwargs = {}
    if cfg.get("origin"):
        kwargs["origin"] = cfg["origin"]
    if cfg.get("subprotocols"):
        kwargs["subprotocols"] = cfg["subprotocols"]
    try:
        async with connect(cfg["url"], max_size=None, **kwargs) as ws:
            out["subprotocol"] = ws.subprotocol
            echoes = []
            for m in cfg.get("send", []):
                data = bytes.fromhex(m["bin"]) if isinstance(m, dict) else m
                await ws.send(data)
                if cfg.get("expect_close"):
                    continue
                reply = await ws.recv()
                echoes.append({"bin": reply.hex()} if isinstance(reply, bytes) else reply)
            out["echoes"] = echoes
            if cfg.get("expect_close"):
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except ConnectionClosed as exc:
                    out["close"] = exc.rcvd.code if exc.rcvd else None
    except InvalidStatus as exc:
        out["status"] = exc.response.status_code
    print(json.dumps(out))

asyncio.run(main())
"""


async def run_websockets_client(url: str, send: list[Any], **config: Any) -> dict[str, Any]:
    messages = [{"bin": m.hex()} if isinstance(m, bytes) else m for m in send]
    argv = [sys.executable, "-c", WS_CLIENT, json.dumps({"url": url, "send": messages, **config})]
    with trio.fail_after(60):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    data: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return data


async def test_websocket_route_limits_origin_subprotocol(hypercorn: None) -> None:
    seen: list[Any] = []

    async def handler(ws: ASGIWebSocket) -> None:
        seen.append((ws.request.path, ws.request.query, ws.subprotocol))
        async for message in ws:
            await ws.send(message)

    app = ASGIApp(websockets={
        "/ws": WebSocketRoute(handler, subprotocols=["chat.v2", "chat.v1"], max_message_size=1000),
        "/open": WebSocketRoute(handler, origins="*"),
    })
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = (await serve_in_process(app, nursery, stop)).replace("http://", "ws://")
        try:
            out = await run_websockets_client(url + "/ws?x=1", ["a" * 1000], subprotocols=["chat.v1", "chat.v2"])
            assert out["echoes"] == ["a" * 1000] and out["subprotocol"] == "chat.v2"
            out = await run_websockets_client(url + "/ws", ["a" * 1001], expect_close=True)
            assert out["close"] == 1009
            out = await run_websockets_client(url + "/ws", ["x"], origin="http://evil.example")
            assert out["status"] == 403
            out = await run_websockets_client(url + "/open", ["x"], origin="http://evil.example")
            assert out["echoes"] == ["x"]
            out = await run_websockets_client(url + "/nowhere", ["x"])
            assert out["status"] == 404
            assert ("/ws", "x=1", "chat.v2") in seen
        finally:
            stop.set()


# ---------------------------------------------------------------------------- lifespan and limits


async def test_lifespan_starts_and_stops_both(hypercorn: None, node: str) -> None:
    for name, make in sorted(FRAMEWORKS.items()):
        record = Record()
        events: list[str] = []
        app = make(record, events)
        assert not app.running
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await serve_in_process(app, nursery, stop)
            assert app.running and events == [f"{name} startup"]
            assert app.socketio._nursery is not None  # the Socket.IO server's tasks run
            out = await run_driver(node_argv(node, url, "websocket", "connect"), JS_DIR)
            check_common(out, "websocket", "connect", record, "node")
            stop.set()
        assert not app.running and events == [f"{name} startup", f"{name} shutdown"]
        assert app.socketio._nursery is None and app.socketio.engineio._nursery is None


async def test_shutdown_closes_open_sessions(hypercorn: None) -> None:
    """At shutdown a parked GET is answered and a WebSocket session is closed (hypercorn
    cancels the connections after its graceful timeout; the sessions end then)."""
    sio = SocketIOServer()
    reasons: list[str] = []

    @sio.on("disconnect")
    async def gone(socket: Any, reason: str) -> None:
        reasons.append(reason)

    app = ASGIApp(sio)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve_in_process(app, nursery, stop, graceful_timeout=0.5)
        status, _, body = await http(url + "/socket.io/?EIO=4&transport=polling")
        sid = json.loads(body[1:])["sid"]
        status, _, body = await http(url + f"/socket.io/?EIO=4&transport=polling&sid={sid}", "-d", "40")
        assert (status, body) == (200, b"ok")
        status, _, body = await http(url + f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        assert status == 200 and body.startswith(b"40{")
        answer: list[tuple[int, bytes]] = []

        async def parked() -> None:
            status, _, body = await http(url + f"/socket.io/?EIO=4&transport=polling&sid={sid}")
            answer.append((status, body))

        nursery.start_soon(parked)
        await trio.sleep(0.5)
        assert not answer  # parked
        stop.set()
    assert answer == [(200, b"1")]
    assert reasons and reasons[0] in ("forced close", "server shutting down")


async def test_same_limits_as_serve(hypercorn: None) -> None:
    sio = SocketIOServer(max_payload=10_000, cors_origins=["http://allowed.example"])
    app = ASGIApp(sio)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve_in_process(app, nursery, stop)
        base = url + "/socket.io/?EIO=4&transport=polling"
        try:
            # Origin: same-origin or the CORS list; others are refused (403, code 4).
            status, _, body = await http(base, "-H", "Origin: http://evil.example")
            assert status == 403 and json.loads(body) == {"code": 4, "message": "Forbidden"}
            status, headers, body = await http(base, "-H", "Origin: http://allowed.example")
            assert status == 200 and headers["access-control-allow-origin"] == "http://allowed.example"
            status, headers, _ = await http(base, "-X", "OPTIONS", "-H", "Origin: http://allowed.example")
            assert status == 204 and "GET" in headers["access-control-allow-methods"]
            # Error bodies of the protocol.
            status, _, body = await http(url + "/socket.io/?EIO=3&transport=polling")
            assert status == 400 and json.loads(body) == {"code": 5, "message": "Unsupported protocol version"}
            status, _, body = await http(url + "/socket.io/?EIO=4&transport=polling&sid=nope")
            assert status == 400 and json.loads(body) == {"code": 1, "message": "Session ID unknown"}
            # maxPayload: a POST over it gets 413 and the session ends.
            status, _, body = await http(base)
            sid = json.loads(body[1:])["sid"]
            status, _, _ = await http(f"{base}&sid={sid}", "--data-binary", "4" + "x" * 10_001)
            assert status == 413
            assert await curl_status(f"{base}&sid={sid}") == 400
            # ... also when the body is streamed without a Content-Length (chunked).
            status, _, body = await http(base)
            sid = json.loads(body[1:])["sid"]
            status, _, _ = await http(f"{base}&sid={sid}", "-H", "Transfer-Encoding: chunked",
                                      "--data-binary", "4" + "x" * 10_001)
            assert status == 413
        finally:
            stop.set()


async def test_websocket_message_too_big_and_heartbeat(hypercorn: None) -> None:
    sio = SocketIOServer(max_payload=1000, ping_interval=0.2, ping_timeout=0.3)
    reasons: list[str] = []

    @sio.on("disconnect")
    async def gone(socket: Any, reason: str) -> None:
        reasons.append(reason)

    app = ASGIApp(sio)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = (await serve_in_process(app, nursery, stop)).replace("http://", "ws://")
        try:
            script = r"""
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
async def main():
    out = {}
    async with connect(sys.argv[1] + "/socket.io/?EIO=4&transport=websocket", max_size=None) as ws:
        out["open"] = json.loads((await ws.recv())[1:])
        await ws.send("40")
        out["connect"] = (await ws.recv())[:3]
        out["ping"] = await asyncio.wait_for(ws.recv(), 5)   # the server pings every 0.2 s
        await ws.send("3")
        await ws.send("42" + json.dumps(["x" * 2000]))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            out["close"] = exc.rcvd.code if exc.rcvd else None
    print(json.dumps(out))
asyncio.run(main())
"""
            with trio.fail_after(60):
                result = await trio.run_process([sys.executable, "-c", script, url], capture_stdout=True,
                                                capture_stderr=True, check=False)
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            out = json.loads(result.stdout)
            assert out["open"]["pingInterval"] == 200 and out["open"]["maxPayload"] == 1000
            assert out["connect"] == "40{" and out["ping"] == "2" and out["close"] == 1009
            with trio.fail_after(10):
                while not reasons:
                    await trio.sleep(0.05)
            assert reasons == ["message too big"]
        finally:
            stop.set()


async def test_no_lifespan_answers_503() -> None:
    """Driven as the ASGI spec says a server calls the app (no lifespan ever sent)."""
    app = ASGIApp(SocketIOServer())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/socket.io/", "query_string": b"EIO=4&transport=polling",
             "headers": [(b"host", b"x")], "http_version": "1.1", "scheme": "http", "root_path": ""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 503


async def test_lifespan_protocol_forwarding() -> None:
    """The lifespan messages, as an ASGI server sends them: startup failure of the wrapped
    app is reported, an app without lifespan support is tolerated."""

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "db down"})

    async def no_lifespan(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("only http here")

    for inner, expected in ((failing, ["lifespan.startup.failed"]),
                            (no_lifespan, ["lifespan.startup.complete", "lifespan.shutdown.complete"])):
        app = ASGIApp(SocketIOServer(), inner)
        to_app_send, to_app_receive = trio.open_memory_channel[dict[str, Any]](10)
        replies: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            await trio.lowlevel.checkpoint()  # as a server's channel send: a cancellation point
            replies.append(message)
            if message["type"] == "lifespan.startup.complete":
                assert app.running
                await to_app_send.send({"type": "lifespan.shutdown"})

        await to_app_send.send({"type": "lifespan.startup"})
        with trio.fail_after(10):
            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app_receive.receive, send)
        assert [m["type"] for m in replies] == expected
        if expected[0] == "lifespan.startup.failed":
            assert replies[0]["message"] == "db down"
        assert not app.running


async def test_upgrade_timeout_keeps_polling(hypercorn: None) -> None:
    """A WebSocket probe that never sends ``2probe`` is closed after the upgrade timeout;
    the long-polling session goes on (as under sio.serve)."""
    sio = SocketIOServer(upgrade_timeout=0.3)
    app = ASGIApp(sio)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve_in_process(app, nursery, stop)
        base = url + "/socket.io/?EIO=4&transport=polling"
        try:
            status, _, body = await http(base)
            sid = json.loads(body[1:])["sid"]
            script = r"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
async def main():
    started = time.monotonic()
    async with connect(sys.argv[1], max_size=None) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 10)
            out = {"unexpected": True}
        except ConnectionClosed as exc:
            out = {"close": exc.rcvd.code if exc.rcvd else None, "after": time.monotonic() - started}
    print(json.dumps(out))
asyncio.run(main())
"""
            ws_url = url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
            with trio.fail_after(60):
                result = await trio.run_process([sys.executable, "-c", script, ws_url], capture_stdout=True,
                                                capture_stderr=True, check=False)
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            out = json.loads(result.stdout)
            assert out["close"] == 1000 and 0.2 < out["after"] < 5
            status, _, body = await http(f"{base}&sid={sid}", "-d", "40")
            assert (status, body) == (200, b"ok")
            status, _, body = await http(f"{base}&sid={sid}")
            assert status == 200 and body.startswith(b"40{")
        finally:
            stop.set()


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
async def test_engineio_endpoint_with_engineio_client(hypercorn: None, node: str, mode: str) -> None:
    """A plain EngineIOApp mounted with ``engineio={path: app}``: the scripted exchange of
    tests/test_engineio_interop.py (text, binary, 512 KiB both ways, 200 ordered messages
    both ways, heartbeats) with the official engine.io-client."""
    from test_engineio_interop import (
        ALL_STEPS,
        FINAL_TRANSPORT,
        PINGS,
        ScriptedHandler,
        client_command,
        expected_client_received,
        expected_server_received,
        make_config,
        run_client,
        server_config,
    )
    from volleyio.trio import EngineIOApp

    handler = ScriptedHandler()
    # The heartbeat step still sees pings every 300 ms; the 2 s ping timeout (200 ms in the
    # sio.serve test) leaves room for hypercorn's slower path on a loaded machine.
    app = ASGIApp(engineio={"/engine.io/": EngineIOApp(handler, config=server_config(2000))})
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve_in_process(app, nursery, stop)
        try:
            port = int(url.rsplit(":", 1)[1])
            command, cwd = client_command("node", node, make_config(port, mode, ALL_STEPS, "client"))
            with trio.fail_after(90):
                out = await run_client(command, cwd)
                await handler.finished.wait()
        finally:
            stop.set()
    assert out["error"] is None and out["returncode"] == 0, out
    if mode == "upgrade":
        assert out["upgrade"]["ok"] is True, out["upgrade"]
    assert out["transport"] == FINAL_TRANSPORT[mode]
    assert out["received"] == expected_client_received(ALL_STEPS)
    assert out["pings"] >= PINGS
    seen = handler.sessions[0]
    assert seen.received == expected_server_received(ALL_STEPS, "client")
    assert seen.transport == FINAL_TRANSPORT[mode]


async def test_slow_consumer_over_asgi(hypercorn: None) -> None:
    """A WebSocket client that stops reading: once the session's outgoing buffer would pass
    ``max_buffered_bytes`` the session ends "slow consumer" (the writer stuck in the ASGI
    server's send gets close_timeout, then the connection is dropped)."""
    sio = SocketIOServer(max_buffered_bytes=64 * 1024)
    reasons: list[str] = []
    emitted: list[int] = []

    @sio.on("flood")
    async def flood(socket: Any) -> None:
        payload = "x" * 1000
        for i in range(50_000):
            if not socket.connected:
                break
            await socket.emit("item", i, payload)
            emitted.append(i)
            if i % 100 == 0:
                await trio.sleep(0)  # let the writer run: the kernel buffers fill, then it blocks

    @sio.on("disconnect")
    async def gone(socket: Any, reason: str) -> None:
        reasons.append(reason)

    app = ASGIApp(sio)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = (await serve_in_process(app, nursery, stop)).replace("http://", "ws://")
        script = r"""
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1] + "/socket.io/?EIO=4&transport=websocket", max_size=None, max_queue=4) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()
        await ws.send('42["flood"]')
        await asyncio.sleep(15)   # never reads again
asyncio.run(main())
"""
        process = await trio.lowlevel.open_process([sys.executable, "-c", script, url])
        try:
            with trio.fail_after(30):
                while not reasons:
                    await trio.sleep(0.05)
        finally:
            process.kill()  # by PID: this process only
            await process.wait()
            stop.set()
    assert reasons == ["slow consumer"]
    assert 0 < len(emitted) < 50_000
