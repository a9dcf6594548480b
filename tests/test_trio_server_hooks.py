"""``serve()``'s request hook and origin policy as a user writes them.

``process_request`` may be ``async def`` or a plain function; ``origins`` may be ``"*"``,
one origin as a string, or a list (a list containing ``"*"`` allows any).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import TEST_TIMEOUT, raw_connection, read_http_response, start_server


def _upgrade(origin: str | None = None, path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _status(port: int, request: bytes) -> int:
    stream = await raw_connection(port)
    async with stream:
        await stream.send_all(request)
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def _sync_hook(request: vt.Request) -> vt.Response | None:
    if request.path == "/health":
        return vt.Response.text(200, "ok")
    if request.header("authorization") is None:
        return vt.Response.text(401, "token needed")
    return None


async def _async_hook(request: vt.Request) -> vt.Response | None:
    await trio.sleep(0)
    return _sync_hook(request)


@pytest.mark.parametrize("hook", [_sync_hook, _async_hook], ids=["plain", "async"])
async def test_process_request_plain_or_async(hook: Any) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, process_request=hook)
            assert await _status(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == 200
            stream = await raw_connection(server.port)
            async with stream:
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await read_http_response(stream)).endswith(b"ok")
            assert await _status(server.port, _upgrade()) == 401
            async with vt.connect(
                f"ws://127.0.0.1:{server.port}/", extra_headers=[("Authorization", "Bearer t")]
            ) as ws:
                await ws.send("hi")
                assert await ws.receive() == "hi"
            server.shutdown()


async def test_process_request_that_raises_answers_500() -> None:
    def broken(request: vt.Request) -> None:
        raise RuntimeError("bug in the hook")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, process_request=broken)
            assert await _status(server.port, _upgrade()) == 500
            server.shutdown()


@pytest.mark.parametrize(
    ("origins", "origin", "status"),
    [
        ("*", "https://any.test", 101),
        (["*"], "https://any.test", 101),
        ("https://app.test", "https://app.test", 101),
        ("https://app.test", "https://h.test", 403),  # a string is one origin, not characters
        (["https://app.test"], "https://evil.test", 403),
        (None, "https://evil.test", 403),
        (None, None, 101),
    ],
)
async def test_origins_spellings(origins: Any, origin: str | None, status: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, origins=origins)
            assert await _status(server.port, _upgrade(origin)) == status
            server.shutdown()
