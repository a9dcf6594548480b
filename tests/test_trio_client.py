"""The client's URL handling, HTTP CONNECT proxy, redirects and reconnect loop."""

from __future__ import annotations

import random

import pytest
import trio

import volleyio.trio as vt
from _trio_support import TEST_TIMEOUT, Certs, start_server


def test_parse_url() -> None:
    u = vt.parse_url("ws://example.com/chat?room=1")
    assert (u.secure, u.host, u.port, u.target) == (False, "example.com", 80, "/chat?room=1")
    u = vt.parse_url("wss://[::1]:8443")
    assert (u.secure, u.host, u.port, u.target, u.host_header) == (True, "::1", 8443, "/", "[::1]:8443")
    u = vt.parse_url("wss://user:p%40ss@h/")
    assert (u.user, u.password, u.port) == ("user", "p@ss", 443)
    for bad in ("ftp://x/", "ws:///nohost", "ws://h/#frag", "ws://h:99999/"):
        with pytest.raises(vt.InvalidURI):
            vt.parse_url(bad)


def test_backoff_grows_caps_and_jitters() -> None:
    rng = random.Random(7)
    delays = [vt.backoff_delay(n, 0.5, 8.0, 2.0, 0.0, rng) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    jittered = [vt.backoff_delay(4, 0.5, 8.0, 2.0, 0.5, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in jittered)
    assert len(set(jittered)) > 100


async def _pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    try:
        while True:
            data = await src.receive_some(65536)
            if not data:
                break
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        try:
            await dst.send_eof()  # type: ignore[attr-defined]
        except (trio.BrokenResourceError, trio.ClosedResourceError, AttributeError):
            pass


async def connect_proxy(task_status: trio.TaskStatus[tuple[int, list[str]]] = trio.TASK_STATUS_IGNORED) -> None:
    """A minimal HTTP CONNECT proxy (loopback only) that records the requests it saw."""
    seen: list[str] = []

    async def handle(client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await client.receive_some(4096)
            if not chunk:
                return
            head += chunk
        first = head.split(b"\r\n", 1)[0].decode()
        seen.append(head.decode())
        method, authority, _ = first.split(" ")
        host, port = authority.rsplit(":", 1)
        if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
            await client.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await client.aclose()
            return
        upstream = await trio.open_tcp_stream("127.0.0.1", int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(_pipe, client, upstream)
            nursery.start_soon(_pipe, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started((listeners[0].socket.getsockname()[1], seen))
    await trio.serve_listeners(handle, listeners)


async def test_http_connect_proxy_plain_and_tls(tmp_path: object) -> None:
    certs = Certs(tmp_path)  # type: ignore[arg-type]
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            proxy_port, seen = await nursery.start(connect_proxy)
            server = await start_server(nursery)
            proxy = f"http://alice:s3cret@127.0.0.1:{proxy_port}"
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", proxy=proxy) as ws:
                await ws.send("through the proxy")
                assert await ws.receive() == "through the proxy"
            assert seen[0].startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1")
            assert "Proxy-Authorization: Basic YWxpY2U6czNjcmV0" in seen[0]
            tls = await start_server(nursery, ssl_context=certs.server_context)
            async with vt.connect(f"wss://localhost:{tls.port}/", proxy=proxy,
                                  ssl_context=certs.client_context) as ws:
                await ws.send(b"tls in a tunnel")
                assert await ws.receive() == b"tls in a tunnel"
            with pytest.raises(vt.ConnectError) as info:
                async with vt.connect("ws://10.255.255.1:9/", proxy=proxy):
                    pass
            assert info.value.status == 403
            nursery.cancel_scope.cancel()


async def test_redirects_are_followed_and_bounded() -> None:
    async def redirects(request: vt.Request) -> vt.Response | None:
        if request.path == "/old":
            return vt.Response(301, b"", [("location", "/mid?x=1")])
        if request.path == "/mid":
            return vt.Response(307, b"", [("location", "/ws")])
        if request.path == "/loop":
            return vt.Response(302, b"", [("location", "/loop")])
        return None

    async def handler(ws: vt.WebSocketConnection) -> None:
        await ws.send(ws.request.target)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, {"/ws": handler}, process_request=redirects)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/old") as ws:
                assert await ws.receive() == "/ws"
            with pytest.raises(vt.ConnectError, match="too many redirects"):
                async with vt.connect(f"ws://127.0.0.1:{server.port}/loop", max_redirects=3):
                    pass
            nursery.cancel_scope.cancel()


async def test_redirect_from_wss_to_ws_is_refused(tmp_path: object) -> None:
    certs = Certs(tmp_path)  # type: ignore[arg-type]

    async def downgrade(request: vt.Request) -> vt.Response | None:
        return vt.Response(302, b"", [("location", "ws://127.0.0.1:1/")])

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, process_request=downgrade, ssl_context=certs.server_context)
            with pytest.raises(vt.ConnectError, match="wss:// to ws://"):
                async with vt.connect(f"wss://127.0.0.1:{server.port}/", ssl_context=certs.client_context):
                    pass
            nursery.cancel_scope.cancel()


async def test_reconnecting_retries_with_backoff_until_the_handler_returns() -> None:
    attempts: list[int] = []
    errors: list[tuple[str, float]] = []

    async def flaky(ws: vt.WebSocketConnection) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            await ws.close(1011, "try again")
        else:
            await ws.send("welcome")
            await ws.receive()

    async def client(ws: vt.WebSocketConnection) -> str:
        message = await ws.receive()
        await ws.send("bye")
        return str(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, flaky)
            result = await vt.reconnecting(
                f"ws://127.0.0.1:{server.port}/", client, min_delay=0.01, max_delay=0.05,
                on_error=lambda exc, delay: errors.append((type(exc).__name__, delay)),
            )
            server.shutdown()
    assert result == "welcome"
    assert len(attempts) == 3
    assert [name for name, _ in errors] == ["ConnectionClosedError", "ConnectionClosedError"]
    assert all(0 <= delay <= 0.05 for _, delay in errors)


async def test_reconnecting_gives_up_after_max_attempts_and_on_4xx() -> None:
    async def deny(request: vt.Request) -> vt.Response | None:
        return vt.Response.text(403)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, process_request=deny)
            with pytest.raises(vt.ConnectError) as info:
                await vt.reconnecting(f"ws://127.0.0.1:{server.port}/", lambda ws: trio.sleep(0))
            assert info.value.status == 403
            server.shutdown()
        tries: list[float] = []
        from _trio_support import free_port

        with pytest.raises(vt.ConnectError):
            await vt.reconnecting(f"ws://127.0.0.1:{free_port()}/", lambda ws: trio.sleep(0),
                                  min_delay=0.001, max_attempts=3, on_error=lambda e, d: tries.append(d))
        assert len(tries) == 2
