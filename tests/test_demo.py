"""The demo behind ``python -m volleyio``: page, assets, Socket.IO chat and counters, the
plain ``/ws`` endpoint, the CLI client, and the page itself in headless Chromium (with
and without WebSocket upgrades getting through)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from _trio_support import JS_DIR, TEST_TIMEOUT, chromium_path, node_path, playwright_available, require_peer
import volleyio.demo
from volleyio import _speedups
from volleyio.__main__ import _parser, main
from volleyio.demo.client import format_event, socketio_base_url
from volleyio.demo.server import Demo, start_demo, validate_chat
import volleyio.trio as vt
from volleyio.trio import SocketIOClient, connect

SRC = Path(__file__).resolve().parent.parent / "src"
#: Where to keep the demo's screenshots for a human to look at (unset: only tmp_path).
SCREENSHOT_DIR = os.environ.get("VOLLEYIO_SCREENSHOT_DIR")


# ------------------------------------------------------------------------------ helpers


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ", 2)[1]), headers, body


async def receive_type(ws: Any, wanted: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.receive())
        if message["type"] == wanted:
            return message  # type: ignore[no-any-return]


@asynccontextmanager
async def running_demo() -> AsyncIterator[Demo]:
    async with trio.open_nursery() as nursery:
        demo = await start_demo(nursery, "127.0.0.1", 0)
        try:
            yield demo
        finally:
            nursery.cancel_scope.cancel()


class Inbox:
    """Events a Socket.IO client received, to wait on in order of arrival."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[Any]]] = []
        self._changed = trio.Event()

    def add_event(self, event: str, *args: Any) -> None:
        self.events.append((event, list(args)))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, event: str, predicate: Any = lambda args: True) -> list[Any]:
        seen = 0
        while True:
            for name, args in self.events[seen:]:
                if name == event and predicate(args):
                    return args
            seen = len(self.events)
            await self._changed.wait()


# ------------------------------------------------------------------------------ page and assets


async def test_page_and_socketio_bundle_are_served_and_unknown_paths_are_404() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            status, headers, body = await http_get(demo.port, "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b"<title>volleyio demo</title>" in body
            assert b'src="/static/socket.io.min.js"' in body
            status, headers, body = await http_get(demo.port, "/static/socket.io.min.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
            assert body.startswith(b"/*!\n * Socket.IO v4.")
            assert int(headers["content-length"]) == len(body) > 10_000
            status, headers, body = await http_get(demo.port, "/static/socket.io.min.js.LICENSE.txt")
            assert status == 200 and b"MIT License" in body
            status, headers, body = await http_get(demo.port, "/static/socket.io.min.js", method="HEAD")
            assert status == 200 and body == b"" and int(headers["content-length"]) > 10_000
            for missing in ("/nope", "/static/", "/static/../server.py", "/static/socket.io.min.js.map"):
                status, _, _ = await http_get(demo.port, missing)
                assert status == 404, missing
            status, _, _ = await http_get(demo.port, "/", method="DELETE")
            assert status == 405
            status, _, body = await http_get(demo.port, "/favicon.ico")  # browsers ask: no 404 in their log
            assert status == 204 and body == b""
            # The Engine.IO handshake answers on the Socket.IO path.
            status, _, body = await http_get(demo.port, "/socket.io/?EIO=4&transport=polling")
            assert status == 200 and body.startswith(b'0{"sid":')


def test_shipped_bundle_is_the_npm_one_with_its_licence() -> None:
    # The installed package's copy (src/ in a checkout, site-packages for a wheel).
    static = Path(volleyio.demo.__file__).parent / "static"
    licence = (static / "socket.io.min.js.LICENSE.txt").read_text()
    assert "Permission is hereby granted, free of charge" in licence
    assert "Guillermo Rauch" in licence and "Component contributors" in licence
    npm_copy = JS_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    if not npm_copy.is_file():
        pytest.skip("tests/js/node_modules not installed")
    assert (static / "socket.io.min.js").read_bytes() == npm_copy.read_bytes(), (
        "socket.io-client in tests/js changed: copy its dist/socket.io.min.js into "
        "src/volleyio/demo/static/ and update the versions in the LICENSE.txt next to it"
    )


def test_package_data_ships_the_static_files() -> None:
    pyproject = (SRC.parent / "pyproject.toml").read_text()
    assert '"demo/static/*"' in pyproject


# ------------------------------------------------------------------------------ chat rules


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"name": " alice ", "text": " hi "}, ("alice", "hi")),
        ({"name": "", "text": "x"}, ("anonymous", "x")),
        ({"name": "n" * 40, "text": "x"}, ("n" * 32, "x")),
        ({"name": 1, "text": "x"}, "name and text must be strings"),
        ({"name": "a", "text": "   "}, "empty message"),
        ({"name": "a", "text": "x" * 1001}, "message longer than 1000 characters"),
        (["a", "b"], 'expected {"name": ..., "text": ...}'),
        (None, 'expected {"name": ..., "text": ...}'),
    ],
)
def test_chat_validation(message: Any, expected: Any) -> None:
    assert validate_chat(message) == expected


# ------------------------------------------------------------------------------ Socket.IO door


async def test_socketio_chat_is_broadcast_with_acks_and_counters() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            url = f"http://127.0.0.1:{demo.port}"
            alice_in, bob_in = Inbox(), Inbox()
            alice = SocketIOClient(url, transports=("polling",), auth={"stats": True})
            bob = SocketIOClient(url, transports=("websocket",))
            for client, inbox in ((alice, alice_in), (bob, bob_in)):
                client.on("*", handler=inbox.add_event)
            async with alice, bob:
                (welcome,) = await alice_in.wait_for("welcome")
                assert welcome["id"] == alice.sid() and welcome["speedups"] == _speedups.IMPLEMENTATION
                assert await alice.call("chat", {"name": "alice", "text": " hi bob "}) == {"ok": True}
                for inbox in (alice_in, bob_in):
                    (line,) = await inbox.wait_for("chat")
                    assert (line["name"], line["text"], line["via"]) == ("alice", "hi bob", "polling")
                assert await bob.call("chat", {"name": "bob", "text": "   "}) == {"error": "empty message"}
                assert await bob.call("chat", "not an object") == {"error": 'expected {"name": ..., "text": ...}'}
                # Only clients that asked for counters (auth {"stats": true}) get them.
                (stats,) = await alice_in.wait_for("stats", lambda args: args[0]["clients"] == 2)
                assert stats["polling"] == 1 and stats["websocket"] == 1 and stats["plain_ws"] == 0
                assert stats["messages_in"] == 3 and stats["messages_out"] >= 2
                assert stats["speedups"] == _speedups.IMPLEMENTATION
                assert not [event for event, _ in bob_in.events if event == "stats"]
                assert demo.stats()["clients"] == 2


async def test_both_doors_share_one_room() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            inbox = Inbox()
            sio = SocketIOClient(f"http://127.0.0.1:{demo.port}")
            sio.on("*", handler=inbox.add_event)
            async with connect(f"ws://127.0.0.1:{demo.port}/ws?stats=1") as ws, sio:
                await receive_type(ws, "welcome")
                await inbox.wait_for("welcome")
                await ws.send(json.dumps({"type": "chat", "name": "plain", "text": "from /ws"}))
                (line,) = await inbox.wait_for("chat")
                assert (line["name"], line["text"], line["via"]) == ("plain", "from /ws", "ws")
                await sio.emit("chat", {"name": "sio", "text": "from socket.io"})
                line = await receive_type(ws, "chat")
                assert line["name"] == "plain"  # its own line, broadcast to /ws as well
                line = await receive_type(ws, "chat")
                assert (line["name"], line["text"]) == ("sio", "from socket.io")
                assert line["via"] in ("polling", "websocket")
                stats = await receive_type(ws, "stats")
                assert stats["clients"] == 2 and stats["plain_ws"] == 1


# ------------------------------------------------------------------------------ plain /ws door


async def test_plain_websocket_chat_is_broadcast_and_counters_are_published() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            url = f"ws://127.0.0.1:{demo.port}/ws"
            async with connect(url) as alice, connect(url + "?stats=1") as bob:
                assert (await receive_type(alice, "welcome"))["transport"] == "websocket"
                await receive_type(bob, "welcome")
                # Counters are opt-in on /ws as on Socket.IO: only bob asked for them.
                assert [ws.request.query for ws in demo.ws_stats] == ["stats=1"]
                await alice.send(json.dumps({"type": "chat", "name": "alice", "text": " hi bob "}))
                for ws in (alice, bob):
                    line = await receive_type(ws, "chat")
                    assert (line["name"], line["text"], line["via"]) == ("alice", "hi bob", "ws")
                stats = await receive_type(bob, "stats")
                assert stats["clients"] == 2 and stats["plain_ws"] == 2
                assert stats["messages_in"] >= 1
                assert stats["speedups"] == _speedups.IMPLEMENTATION


async def test_bad_plain_websocket_input_is_refused_without_dropping_the_client() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            async with connect(f"ws://127.0.0.1:{demo.port}/ws") as ws:
                await receive_type(ws, "welcome")
                for bad, reason in [
                    ("not json", "not JSON"),
                    ('{"name": "a", "text": "x"}', 'expected {"type": "chat"'),
                    ('{"type": "chat", "name": 1, "text": "x"}', "name and text must be strings"),
                    (json.dumps({"type": "chat", "name": "a", "text": "x" * 1001}), "longer than 1000"),
                    ('{"type": "chat", "name": "a", "text": "   "}', "empty message"),
                ]:
                    await ws.send(bad)
                    assert reason in (await receive_type(ws, "error"))["reason"]
                await ws.send(b"\x00binary")
                assert "JSON text" in (await receive_type(ws, "error"))["reason"]
                await ws.send(json.dumps({"type": "chat", "name": "", "text": "still here"}))
                line = await receive_type(ws, "chat")
                assert (line["name"], line["text"]) == ("anonymous", "still here")


async def test_data_arriving_with_the_101_is_not_lost() -> None:
    """A server that speaks first (Engine.IO sends its open packet at once) may have its
    first frame arrive in the same read as the 101 response: the CLI on
    ``--transport websocket`` then hung until its 10 s handshake timeout."""

    async def speak_first(stream: trio.SocketStream) -> None:
        head = bytearray()
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\x81\x05hello")  # one write
        await trio.sleep_forever()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, speak_first, 0)
            port = listeners[0].socket.getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/", close_timeout=0.1) as ws:
                assert await ws.receive() == "hello"
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ command line


def test_command_line_parsing() -> None:
    parser = _parser()
    args = parser.parse_args([])
    assert (args.command, args.host, args.port) == (None, "127.0.0.1", 8000)
    args = parser.parse_args(["--port", "9000"])
    assert (args.host, args.port) == ("127.0.0.1", 9000)
    args = parser.parse_args(["demo", "--host", "::1", "--port", "0"])
    assert (args.command, args.host, args.port) == ("demo", "::1", 0)
    args = parser.parse_args(["client", "http://h:1", "--transport", "polling", "--namespace", "/chat",
                              "--auth", '{"stats": true}'])
    assert (args.transport, args.namespace, args.auth) == ("polling", "/chat", {"stats": True})
    args = parser.parse_args(["client", "ws://h:1/ws", "--stats", "--raw", "--name", "n"])
    assert (args.stats, args.raw, args.name) == (True, True, "n")
    for bad in (["client", "http://h:1", "--namespace", "chat"], ["client", "http://h:1", "--auth", "[1]"],
                ["client", "http://h:1", "--transport", "carrier-pigeon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    # Socket.IO options on a plain WebSocket URL are a mistake, not silently ignored.
    with pytest.raises(SystemExit) as exit_info:
        main(["client", "ws://127.0.0.1:9/ws", "--transport", "polling"])
    assert exit_info.value.code == 2


def test_client_helpers() -> None:
    assert socketio_base_url("ws://h:1/x?y=1") == "http://h:1/x?y=1"
    assert socketio_base_url("wss://h") == "https://h"
    assert socketio_base_url("http://h:2") == "http://h:2"
    assert format_event("chat", [{"name": "é", "n": 1}, b"\x00\x01", None]) == 'chat {"name":"é","n":1} <2 bytes> null'


async def _run_cli(args: list[str], lines: list[str], until: str) -> tuple[str, str]:
    """Run ``python -m volleyio client ...``, type ``lines``, read stdout until ``until``
    appears, then close stdin (end of input) and return stdout and stderr."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if _speedups.IMPLEMENTATION == "python":
        env["VOLLEYIO_NO_EXTENSIONS"] = "1"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "volleyio", "client", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    out = bytearray()
    err = bytearray()
    try:
        async def drain_stderr() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                err.extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr)
            for line in lines:
                await process.stdin.send_all(line.encode() + b"\n")
            async for chunk in process.stdout:
                out += chunk
                if until.encode() in out:
                    break
            assert until.encode() in out, (out.decode(), err.decode())
            await process.stdin.aclose()  # end of input: the client disconnects and exits
            async for chunk in process.stdout:
                out += chunk
        status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    assert status == 0, err.decode()
    return out.decode(), err.decode()


@pytest.mark.parametrize("transport", [None, "polling", "websocket", "ws-url"])
async def test_socketio_cli_chats_with_the_demo(transport: str | None) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            args = [f"http://127.0.0.1:{demo.port}/", "--name", "terminal"]
            if transport == "ws-url":  # a ws:// URL with --socketio: Socket.IO over an http:// base
                args[0], transport = f"ws://127.0.0.1:{demo.port}/", None
                args.append("--socketio")
            if transport:
                args += ["--transport", transport]
            out, err = await _run_cli(args, ["hello from the cli"], until="hello from the cli")
    assert "connected to" in err
    chat = [line for line in out.splitlines() if line.startswith("chat ")]
    assert chat, out
    payload = json.loads(chat[0][len("chat "):])
    assert (payload["name"], payload["text"]) == ("terminal", "hello from the cli")
    if transport:
        assert payload["via"] == transport
    assert any(line.startswith("welcome ") for line in out.splitlines())


async def test_socketio_cli_commands() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            lines = [
                "/help",
                "/name bob",
                '/call chat {"name": "x", "text": ""}',     # refused: the ack says why
                "/emit chat {not json",                      # a local error; the client goes on
                '/emit chat {"name": "raw", "text": "via /emit"}',
                "   ",                                       # blank lines are not sent
                "last line",
            ]
            out, err = await _run_cli([f"http://127.0.0.1:{demo.port}/"], lines, until="last line")
    assert "/emit EVENT" in err
    assert 'ack {"error":"empty message"}' in out
    assert "not JSON" in err
    texts = [(p["name"], p["text"]) for p in (json.loads(line[5:]) for line in out.splitlines() if line.startswith("chat "))]
    assert texts == [("raw", "via /emit"), ("bob", "last line")]


async def test_websocket_cli_still_speaks_plain_websocket() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            line = json.dumps({"type": "chat", "name": "ws-cli", "text": "plain"})  # JSON: sent as is
            out, _ = await _run_cli([f"ws://127.0.0.1:{demo.port}/ws"], [line], until='"text":"plain"')
    messages = [json.loads(x) for x in out.splitlines()]
    assert messages[0]["type"] == "welcome"
    assert any(m["type"] == "chat" and m["name"] == "ws-cli" for m in messages)


async def test_websocket_cli_sends_a_typed_line_as_chat_and_stats_only_when_asked() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            url = f"ws://127.0.0.1:{demo.port}/ws"
            out, err = await _run_cli([url, "--name", "typist"], ["", "hello there"], until="hello there")
            asked, _ = await _run_cli([url, "--stats"], ["hi"], until='"type": "stats"')
    messages = [json.loads(x) for x in out.splitlines()]
    chats = [(m["name"], m["text"]) for m in messages if m["type"] == "chat"]
    assert chats == [("typist", "hello there")]  # the blank line was not sent
    assert not [m for m in messages if m["type"] in ("stats", "error")]
    assert any(json.loads(x)["type"] == "stats" for x in asked.splitlines())


async def test_websocket_cli_raw_sends_lines_verbatim() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_demo() as demo:
            out, _ = await _run_cli([f"ws://127.0.0.1:{demo.port}/ws", "--raw"], ["not json"], until='"error"')
    assert any(json.loads(x) == {"type": "error", "reason": "not JSON"} for x in out.splitlines())


def test_busy_port_is_one_line_with_what_to_do() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "volleyio", "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"port {port} is already in use" in lines[0] and "--port" in lines[0]


def test_help_is_plain_text() -> None:
    for argv in ([], ["demo"], ["client"], ["info"]):
        parser = _parser()
        text = parser.format_help() if not argv else parser._subparsers._group_actions[0].choices[argv[0]].format_help()  # type: ignore[union-attr]
        assert "``" not in text and ":class:" not in text and ":func:" not in text, text


async def test_websocket_cli_exits_when_the_server_goes_away_while_nobody_types() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            demo = await start_demo(nursery, "127.0.0.1", 0)
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "volleyio", "client", f"ws://127.0.0.1:{demo.port}/ws"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                out = b""
                async for chunk in process.stdout:
                    out += chunk
                    if b'"welcome"' in out:
                        break
                assert demo.server is not None
                demo.server.shutdown()  # stdin stays open: the client must not wait for a line
                status = await process.wait()
                err = await process.stderr.receive_some(65536)
            finally:
                if process.returncode is None:
                    process.kill()
                    with trio.CancelScope(shield=True):
                        await process.wait()
            nursery.cancel_scope.cancel()
    assert status == 1
    assert b"connection closed" in err


# ------------------------------------------------------------------------------ the page in Chromium


@pytest.fixture
def browser_env() -> dict[str, str]:
    require_peer(playwright_available(), "node with tests/js/node_modules/playwright-core (npm ci in tests/js)")
    chromium = chromium_path()
    require_peer(chromium is not None, "chromium (scripts/apt-packages.txt)")
    assert chromium is not None
    return {**os.environ, "CHROMIUM_PATH": chromium}


async def _read_head(stream: trio.abc.Stream, buffer: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    return head


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


async def _read_exactly(stream: trio.abc.Stream, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buffer += chunk
    body = bytes(buffer[:size])
    del buffer[:size]
    return body


async def websocket_blocking_proxy(upstream_port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """An HTTP proxy as some corporate networks have: requests that ask to upgrade to
    WebSocket get 400, everything else is forwarded to ``upstream_port``. One request per
    client connection (the answer closes it), which keeps the forwarding exact."""

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            buffer = bytearray()
            head = await _read_head(client, buffer)
            if head is None:
                return
            if any(line.lower().startswith(b"upgrade:") and b"websocket" in line.lower() for line in head.split(b"\r\n")):
                await client.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            body = await _read_exactly(client, buffer, _content_length(head) or 0)
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            head = b"\r\n".join(lines[:-2]) + b"\r\nConnection: close\r\n\r\n"
            upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
            async with upstream:
                await upstream.send_all(head + body)
                answer = bytearray()
                response_head = await _read_head(upstream, answer)
                if response_head is None:
                    return
                length = _content_length(response_head)
                if length is None:
                    while chunk := await upstream.receive_some(65536):
                        answer += chunk
                    response_body = bytes(answer)
                else:
                    response_body = await _read_exactly(upstream, answer, length)
            await client.send_all(response_head + response_body)

    await trio.serve_tcp(handle, 0, host="127.0.0.1", task_status=task_status)


async def _run_page(env: dict[str, str], mode: str, page_url: str, screenshot: Path) -> dict[str, Any]:
    node = node_path()
    assert node is not None
    result = await trio.run_process(
        [node, "demo_browser.js", mode, page_url, str(screenshot)], cwd=str(JS_DIR), env=env,
        capture_stdout=True, capture_stderr=True, check=False,
    )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"demo_browser.js printed nothing; stderr: {result.stderr.decode()[-2000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data
    return data


def _keep_screenshot(screenshot: Path, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(SCREENSHOT_DIR) / name)


def _check_chat(out: dict[str, Any], mode: str) -> None:
    alice_log, bob_log = out["logs"]
    assert any(f"alicehello bob over {mode}" in line for line in bob_log), bob_log
    assert any("bobhi alice" in line for line in alice_log), alice_log
    assert any(line.startswith("connected to volleyio") for line in alice_log)
    counters = out["counters"]
    assert counters["clients"] == "2" and counters[mode] == "2"
    assert counters["speedups"] in ("compiled", "python")
    assert out["consoleErrors"] == []


@pytest.mark.interop
async def test_page_in_chromium_upgrades_to_websocket(browser_env: dict[str, str], tmp_path: Path) -> None:
    screenshot = tmp_path / "demo-websocket.png"
    with trio.fail_after(TEST_TIMEOUT + 60):
        async with running_demo() as demo:
            out = await _run_page(browser_env, "websocket", f"http://127.0.0.1:{demo.port}/", screenshot)
    assert out["transports"] == ["websocket", "websocket"]
    for observed in out["observed"]:
        assert observed["transports"] == ["polling", "websocket"]  # started on polling, then upgraded
        assert observed["upgradeErrors"] == 0
    _check_chat(out, "websocket")
    assert screenshot.stat().st_size > 10_000
    _keep_screenshot(screenshot, "demo-websocket.png")


@pytest.mark.interop
async def test_page_in_chromium_stays_on_polling_when_websocket_is_blocked(
    browser_env: dict[str, str], tmp_path: Path
) -> None:
    screenshot = tmp_path / "demo-polling.png"
    with trio.fail_after(TEST_TIMEOUT + 60):
        async with running_demo() as demo, trio.open_nursery() as nursery:
            listeners = await nursery.start(websocket_blocking_proxy, demo.port)
            proxy_port = listeners[0].socket.getsockname()[1]
            out = await _run_page(browser_env, "polling", f"http://127.0.0.1:{proxy_port}/", screenshot)
            nursery.cancel_scope.cancel()
    assert out["transports"] == ["polling", "polling"]
    for observed in out["observed"]:
        assert observed["transports"] == ["polling"]
        assert observed["upgradeErrors"] >= 1
    assert "WebSocket upgrade blocked" in out["upgradeNotice"]
    _check_chat(out, "polling")
    assert screenshot.stat().st_size > 10_000
    _keep_screenshot(screenshot, "demo-polling.png")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
async def test_demo_process_stops_cleanly_on_sigterm() -> None:
    """``python -m volleyio`` under a service manager: SIGTERM closes the clients with
    1001 and the process exits 0."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if _speedups.IMPLEMENTATION == "python":
        env["VOLLEYIO_NO_EXTENSIONS"] = "1"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "volleyio", "--port", "0"], stderr=subprocess.PIPE, env=env,
    )
    assert process.stderr is not None
    try:
        with trio.fail_after(TEST_TIMEOUT):
            banner = bytearray()
            async for chunk in process.stderr:
                banner += chunk
                if b"(Ctrl-C to stop)" in banner:
                    break
            port = int(banner.decode().split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                assert "welcome" in str(await ws.receive())
                process.send_signal(signal.SIGTERM)
                with pytest.raises(vt.ConnectionClosed) as info:
                    while True:
                        await ws.receive()
                assert info.value.code == 1001
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()  # only the process this test started
            with trio.CancelScope(shield=True):
                await process.wait()
