"""Headless Chromium running socket.io-client's browser bundle against volleyio's trio
SocketIOServer (Debian chromium + playwright-core, tests/js/sio_browser.js).

The page (tests/js/sio_page.html) and the bundle come from the same volleyio server
(a ``process_request`` route next to the Socket.IO mount). Once directly, where the page
must end on WebSocket, and once through a small trio proxy (``LoopbackProxy``) that answers
every ``Upgrade: websocket`` with 400 (a proxy that cannot carry WebSocket), where the page
must do the same work over long-polling.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, chromium_path, node_path, playwright_available, require_peer
from test_socketio_interop import (  # noqa: F401 - node, node_reference, reference_once are fixtures
    LoopbackProxy,
    NodeReference,
    Record,
    build_server,
    node,
    node_reference,
    reference_once,
)

pytestmark = pytest.mark.interop

BUNDLE = JS_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
PAGE = JS_DIR / "sio_page.html"
BROWSER_TIMEOUT = 90.0


@pytest.fixture
def browser_env() -> dict[str, str]:
    require_peer(playwright_available(), "node with tests/js/node_modules/playwright-core (npm ci in tests/js)")
    require_peer(BUNDLE.is_file(), "socket.io-client's browser bundle (npm ci in tests/js)")
    chromium = chromium_path()
    require_peer(chromium is not None, "chromium (scripts/apt-packages.txt)")
    assert chromium is not None
    return {**os.environ, "CHROMIUM_PATH": chromium}


STATIC: dict[str, tuple[Path, str]] = {
    "/sio_page.html": (PAGE, "text/html; charset=utf-8"),
    "/socket.io.min.js": (BUNDLE, "application/javascript; charset=utf-8"),
}


async def static_files(request: vt.Request) -> vt.Response | None:
    entry = STATIC.get(request.path)
    if entry is None:
        return None
    return vt.Response(200, entry[0].read_bytes(), [("content-type", entry[1]), ("cache-control", "no-store")])


async def run_browser(env: dict[str, str], page_url: str) -> dict[str, Any]:
    node = node_path()
    assert node is not None
    with trio.fail_after(BROWSER_TIMEOUT):
        result = await trio.run_process([node, "sio_browser.js", page_url], cwd=str(JS_DIR), env=env,
                                        capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"sio_browser.js printed nothing; stderr: {result.stderr.decode()[-3000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data["error"]
    assert result.returncode == 0 and data["ok"] is True, data
    return data


def check_exchange(out: dict[str, Any], record: Record, transport: str) -> None:
    assert out["bundleLoaded"] is True
    # Chromium logs the refused handshake (only expected behind the proxy); nothing else.
    refused = "Error during WebSocket handshake: Unexpected response code: 400"
    unexpected = [e for e in out["consoleErrors"] if not (transport == "polling" and refused in e)]
    assert unexpected == []
    assert out["me"]["auth"] == {"token": "good", "user": "browser"}
    assert (out["me"]["sid"], out["me"]["eio"]) == (out["sid"], out["eio"])
    assert out["me"]["transport"] == transport  # what the server saw when the exchanges began
    assert out["final"] == transport
    assert out["echo"] == ["héllo ✓", 42, {"a": [1, None, True]}]
    big = bytes(i % 251 for i in range(70000))
    assert out["binaryEcho"] == [{"$bin": "000102ff"},
                                 {"nested": [{"$bin_len": len(big), "$bin_sum": sum(big) % 65536}, "txt", {"$bin": "2a"}]}]
    assert out["answers"] == [{"i": i, "payload": {"blob": {"$bin": "000102ff"}, "n": 7}, "from": "browser"}
                              for i in range(3)]
    assert out["eventAck"] is True and out["event"] == [{"$bin": "000102ff"}, "with text"]
    assert ("/", out["sid"], out["eio"], {"token": "good", "user": "browser"}) in record.connects
    assert record.transports == {transport}


async def wait_for_reason(record: Record, sid: str) -> str:
    # The page's goodbye may still be in flight when the browser process has exited.
    with trio.fail_after(10):
        while sid not in record.reasons:
            await trio.sleep(0.01)
    reason: str = record.reasons[sid]
    return reason


async def test_browser_bundle_upgrades_to_websocket(browser_env: dict[str, str]) -> None:
    record = Record()
    sio = build_server(record)
    with trio.fail_after(BROWSER_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0, process_request=static_files))
            out = await run_browser(browser_env, f"http://127.0.0.1:{server.port}/sio_page.html")
            reason = await wait_for_reason(record, out["sid"])
            nursery.cancel_scope.cancel()
    assert out["offeredUpgrades"] == ["websocket"]
    assert out["transports"] == ["polling", "websocket"] and out["upgradeErrors"] == 0
    check_exchange(out, record, "websocket")
    assert reason == "client namespace disconnect"


async def test_browser_bundle_falls_back_to_polling_when_upgrades_are_refused(browser_env: dict[str, str]) -> None:
    record = Record()
    sio = build_server(record)
    with trio.fail_after(BROWSER_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0, process_request=static_files))
            proxy = LoopbackProxy(server.port, websocket="refuse")
            proxy_port = await proxy.serve(nursery)
            out = await run_browser(browser_env, f"http://127.0.0.1:{proxy_port}/sio_page.html")
            reason = await wait_for_reason(record, out["sid"])
            nursery.cancel_scope.cancel()
    assert proxy.refused_upgrades >= 1  # the browser did try, and was turned away
    assert any(line.startswith("POST /socket.io/") for line in proxy.forwarded)
    assert out["offeredUpgrades"] == ["websocket"]
    assert out["transports"] == ["polling"] and out["upgradeErrors"] >= 1
    check_exchange(out, record, "polling")
    assert reason == "client namespace disconnect"


@pytest.mark.parametrize("websocket", ["allowed", "refused"])
async def test_browser_page_against_node_reference(browser_env: dict[str, str], node_reference: NodeReference,
                                                   websocket: str) -> None:
    """Control: the same page against Node's socket.io (tests/js/sio_ref_server.js serves it)."""
    with trio.fail_after(BROWSER_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            port = node_reference.port
            if websocket == "refused":
                port = await LoopbackProxy(port, websocket="refuse").serve(nursery)
            out = await run_browser(browser_env, f"http://127.0.0.1:{port}/sio_page.html")
            nursery.cancel_scope.cancel()
    transport = "websocket" if websocket == "allowed" else "polling"
    assert out["me"]["transport"] == out["final"] == transport
    assert out["transports"] == (["polling", "websocket"] if websocket == "allowed" else ["polling"])
    assert out["eventAck"] is True and out["event"] == [{"$bin": "000102ff"}, "with text"]
