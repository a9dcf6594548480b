"""volleyio.trio against headless Chromium's own WebSocket (Debian chromium + playwright-core)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import (
    JS_DIR,
    TEST_TIMEOUT,
    Certs,
    chromium_path,
    node_path,
    playwright_available,
    require_peer,
    start_server,
)

pytestmark = pytest.mark.interop

PAGE = b"<!doctype html><title>volleyio</title><p>volleyio interop page</p>"


@pytest.fixture
def browser_env() -> dict[str, str]:
    require_peer(playwright_available(), "node with tests/js/node_modules/playwright-core (npm ci in tests/js)")
    chromium = chromium_path()
    require_peer(chromium is not None, "chromium (scripts/apt-packages.txt)")
    assert chromium is not None
    return {**os.environ, "CHROMIUM_PATH": chromium}


async def page(request: vt.Request) -> vt.Response | None:
    if request.path == "/page":
        return vt.Response(200, PAGE, [("content-type", "text/html; charset=utf-8")])
    return None


def make_handler(seen: dict[str, Any]):  # type: ignore[no-untyped-def]
    async def handler(ws: vt.WebSocketConnection) -> None:
        seen["extensions"] = [e.name for e in ws.extensions]
        seen["origin"] = ws.request.header("origin")
        async for message in ws:
            if message == "server-ping":
                await ws.ping(b"to-browser")  # returns when Chromium's pong arrives
                await ws.send("pinged")
            elif message == "server-close":
                await ws.close(4001, "bye browser")  # returns after Chromium's close echo
                break
            else:
                await ws.send(message)
        seen["closed"] = (ws.close_code, ws.close_reason)

    return handler


async def _run_browser(env: dict[str, str], page_url: str, ws_url: str) -> dict[str, Any]:
    node = node_path()
    assert node is not None
    result = await trio.run_process([node, "browser.js", page_url, ws_url], cwd=str(JS_DIR), env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"browser.js printed nothing; stderr: {result.stderr.decode()[-2000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data
    return data


def _check(out: dict[str, Any]) -> None:
    assert out["protocol"] == "chat.v1"
    echoes = out["echoes"]
    assert echoes[0] == {"binary": False, "text": "héllo ✓ from chromium"}
    assert echoes[1]["binary"] and echoes[1]["hex"] == "000102ff"
    big = bytes(i % 251 for i in range(1_000_000))
    assert (echoes[2]["length"], echoes[2]["sum"]) == (len(big), sum(big) % 65536)
    assert echoes[3] == {"binary": False, "text": "y" * 20000}
    assert echoes[4] == {"binary": False, "text": "pinged"}
    assert out["close"] == {"code": 4001, "reason": "bye browser", "wasClean": True}


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_chromium_websocket_against_volleyio(browser_env: dict[str, str], compression: str | None) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(TEST_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, {"/ws": make_handler(seen)}, process_request=page,
                                        subprotocols=["chat.v1"], compression=compression)
            base = f"127.0.0.1:{server.port}"
            out = await _run_browser(browser_env, f"http://{base}/page", f"ws://{base}/ws")
            server.shutdown()
    _check(out)
    assert seen["origin"] == f"http://{base}"  # same-origin default accepted the page's origin
    assert seen["closed"] == (4001, "bye browser")
    if compression:
        assert out["extensions"].startswith("permessage-deflate")
        assert seen["extensions"] == ["permessage-deflate"]
    else:
        assert out["extensions"] == ""


async def test_chromium_over_tls(browser_env: dict[str, str], tmp_path: Any) -> None:
    certs = Certs(tmp_path)
    seen: dict[str, Any] = {}
    env = dict(browser_env)
    with trio.fail_after(TEST_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, {"/ws": make_handler(seen)}, process_request=page,
                                        subprotocols=["chat.v1"], ssl_context=certs.server_context)
            base = f"127.0.0.1:{server.port}"
            env["IGNORE_CERT_ERRORS"] = "1"  # the trustme CA is not in Chromium's store
            out = await _run_browser(env, f"https://{base}/page", f"wss://{base}/ws")
            server.shutdown()
    _check(out)
    assert seen["origin"] == f"https://{base}"


async def test_chromium_cross_origin_is_rejected_by_default(browser_env: dict[str, str]) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(TEST_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            pages = await start_server(nursery, {"/none": make_handler(seen)}, process_request=page)
            server = await start_server(nursery, {"/ws": make_handler(seen)}, subprotocols=["chat.v1"])
            out = await _run_browser(browser_env, f"http://127.0.0.1:{pages.port}/page",
                                     f"ws://127.0.0.1:{server.port}/ws")
            pages.shutdown()
            server.shutdown()
    # The page's origin differs (other port): 403, so the browser never opens.
    assert out["protocol"] is None and out["close"]["code"] == 1006
    assert seen == {}
