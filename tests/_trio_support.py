"""Helpers shared by the tests/test_trio_*.py files (servers, certificates, peers)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt

JS_DIR = Path(__file__).parent / "js"
IN_CI = os.environ.get("CI", "").lower() == "true"

try:  # websockets.trio exists from websockets 17, which needs Python 3.11
    from websockets.trio.client import connect as ws_trio_connect
    from websockets.trio.server import serve as ws_trio_serve
except ImportError:  # Python 3.10 (websockets <= 16): only the asyncio implementation
    ws_trio_connect = ws_trio_serve = None  # type: ignore[assignment]

#: Marks a test that drives the ``websockets`` library's trio implementation; skipped
#: where it cannot be installed (Python 3.10), so the rest of its module still runs there.
needs_websockets_trio = pytest.mark.skipif(
    ws_trio_connect is None, reason="websockets.trio needs websockets>=17 (Python 3.11+)"
)

#: Safety net for every integration test: none of them should come close.
TEST_TIMEOUT = 30.0


def require_peer(available: bool, what: str) -> None:
    """Skip on a dev machine without ``what``; fail in CI (CI=true) where it must exist."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} not available on this machine")


def node_path() -> str | None:
    return shutil.which("node")


def node_ws_available() -> bool:
    return node_path() is not None and (JS_DIR / "node_modules" / "ws").is_dir()


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def playwright_available() -> bool:
    return node_path() is not None and (JS_DIR / "node_modules" / "playwright-core").is_dir()


async def echo_handler(ws: vt.WebSocketConnection) -> None:
    async for message in ws:
        await ws.send(message)


class EchoHandler(vt.MessageHandler):
    """The callback-mode twin of :func:`echo_handler`."""

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        ws.send_nowait(message)


#: The two ways to serve a WebSocket connection; tests that apply to both take the
#: ``handler_style`` fixture (tests/conftest.py) and serve ``echo_for(handler_style)``.
HANDLER_STYLES = ("async", "callbacks")


def echo_for(style: str) -> Any:
    """An echo in ``style``: the ``async def`` echo_handler or an EchoHandler instance."""
    if style == "async":
        return echo_handler
    if style == "callbacks":
        return EchoHandler()
    raise ValueError(f"unknown handler style {style!r}")


async def start_server(
    nursery: trio.Nursery, handler: Callable[[vt.WebSocketConnection], Awaitable[Any]] = echo_handler,
    **options: Any,
) -> vt.WebSocketServer:
    server: vt.WebSocketServer = await nursery.start(
        lambda task_status: vt.serve(handler, "127.0.0.1", 0, task_status=task_status, **options)
    )
    return server


class Certs:
    """A trustme CA and a server certificate for 127.0.0.1 / localhost."""

    def __init__(self, tmp: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(self.server_context)
        self.client_context = ssl.create_default_context()
        self.ca.configure_trust(self.client_context)
        self.ca_pem = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))


async def raw_connection(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_http_response(stream: trio.abc.Stream, limit: int = 65536) -> bytes:
    """Read until the peer closes (or ``limit``); returns everything."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
