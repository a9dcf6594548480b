"""The Socket.IO Admin UI protocol (issue 15, point 4): ``sio.instrument(auth=...)`` against
the real ``@socket.io/admin-ui`` 0.5 -- its protocol driven by socket.io-client in Node
(tests/js/sio_admin_client.js) and its own dashboard page (ui/dist, served on loopback)
in headless Debian chromium (tests/js/admin_ui_browser.js)."""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, chromium_path, node_path, playwright_available, require_peer
from volleyio.errors import VolleyError
from volleyio.trio import Socket, SocketIOServer

pytestmark = pytest.mark.interop

ADMIN_UI = JS_DIR / "node_modules" / "@socket.io" / "admin-ui"
UI_DIST = ADMIN_UI / "ui" / "dist"
#: Screenshots of the dashboard (looked at by hand; kept out of the repository).
SHOTS = Path(os.environ.get("VOLLEYIO_ADMIN_SHOTS", "/tmp/admin-shots"))


def bcrypt_hash(password: str) -> str:
    bcrypt = pytest.importorskip("bcrypt")
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())


# ---------------------------------------------------------------------------- options


def test_auth_must_be_explicit_and_valid() -> None:
    sio = SocketIOServer()
    with pytest.raises(VolleyError):
        sio.instrument(auth={"type": "digest", "username": "a", "password": "b"})
    with pytest.raises(VolleyError):
        SocketIOServer().instrument(auth={"type": "basic", "username": "a", "password": "not a hash"})
    with pytest.raises(ValueError):
        SocketIOServer().instrument(auth=False, mode="staging")  # type: ignore[arg-type]
    admin = SocketIOServer().instrument(auth=False, readonly=True, mode="production")
    assert admin.features == ["AGGREGATED_EVENTS"]
    sio = SocketIOServer()
    sio.instrument(auth=False)
    with pytest.raises(RuntimeError):
        sio.instrument(auth=False)


# ---------------------------------------------------------------------------- the server under test


class Scene:
    """A volleyio server with a few connected sockets for the dashboard to show."""

    def __init__(self, auth: Any, **server_options: Any) -> None:
        self.sio = SocketIOServer(**server_options)
        self.admin = self.sio.instrument(auth=auth, stats_interval=0.5, server_id="volleyio-test-server")
        self.hellos: list[Any] = []
        self.chat_reasons: list[str] = []
        chat = self.sio.of("/chat")

        @self.sio.on("connect")
        async def connect(socket: Socket, auth: Any) -> None:
            socket.data["name"] = auth.get("name", "anonymous")
            await socket.join("everyone")

        @self.sio.on("ping")
        async def ping(socket: Socket, n: int) -> int:
            await socket.emit("pong", n)
            return n

        @chat.on("connect")
        async def chat_connect(socket: Socket, auth: Any) -> None:
            await socket.join("lobby")

        @chat.on("disconnect")
        async def chat_disconnect(socket: Socket, reason: str) -> None:
            self.chat_reasons.append(reason)

    @asynccontextmanager
    async def clients(self, url: str) -> AsyncIterator[list[vt.SocketIOClient]]:
        ada = vt.SocketIOClient(url, transports=("websocket",), auth={"name": "ada"})
        bob = vt.SocketIOClient(url, transports=("polling",), auth={"name": "bob"})
        carol = vt.SocketIOClient(url, namespaces=("/chat",))

        @ada.on("hello")
        def hello(*args: Any) -> None:
            self.hellos.append(("ada", *args))

        @bob.on("hello")
        def bob_hello(*args: Any) -> None:
            self.hellos.append(("bob", *args))

        async with ada, bob, carol:
            for i in range(3):
                await ada.call("ping", i)
            with trio.fail_after(10):  # carol upgrades: bob stays the one polling client
                while carol.transport != "websocket":
                    await trio.sleep(0.02)
            yield [ada, bob, carol]


@asynccontextmanager
async def serving(sio: SocketIOServer) -> AsyncIterator[int]:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
            yield server.port
            nursery.cancel_scope.cancel()


@pytest.fixture
def node() -> str:
    require_peer(node_path() is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir()
                 and ADMIN_UI.is_dir(), "node with tests/js/node_modules (socket.io-client, @socket.io/admin-ui)")
    path = node_path()
    assert path is not None
    return path


async def run_node(node: str, script: str, config: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    env = {**os.environ, "CHROMIUM_PATH": chromium_path() or "/usr/bin/chromium"}
    with trio.fail_after(timeout):
        result = await trio.run_process([node, script, json.dumps(config)], cwd=str(JS_DIR), env=env,
                                        capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"{script} printed nothing (exit {result.returncode}); stderr: {result.stderr.decode()[-3000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data["error"]
    assert result.returncode == 0 and data.get("ok") is True, data
    return data


# ---------------------------------------------------------------------------- protocol, from Node


async def drive_admin_protocol(node: str, scene: Scene, url: str) -> dict[str, Any]:
    """Connect the scene's clients to ``url``, run sio_admin_client.js, check the effects
    the clients saw (the hellos of the "emit" operation, carol disconnected)."""
    async with scene.clients(url) as (ada, bob, carol):
        out = await run_node(node, "sio_admin_client.js", {"url": url, "username": "admin", "password": "s3cret"})
        with trio.fail_after(5):
            while not carol.closed and carol.is_connected("/chat"):
                await trio.sleep(0.02)
        assert scene.hellos and sorted(h[0] for h in scene.hellos) == ["ada", "bob"]
        assert all(h[1:] == (1,) for h in scene.hellos)
        assert carol.is_connected("/chat") is False
    return out


async def test_admin_protocol_with_socket_io_client(node: str) -> None:
    scene = Scene({"type": "basic", "username": "admin", "password": bcrypt_hash("s3cret")})
    async with serving(scene.sio) as port:
        out = await drive_admin_protocol(node, scene, f"http://127.0.0.1:{port}")
    assert scene.chat_reasons == ["server namespace disconnect"]
    check_admin_protocol(out, "volleyio-test-server", os.getpid())


async def test_admin_protocol_driver_against_node_reference(node: str, speedups_impl: str) -> None:
    """The same driver against Node's socket.io instrumented by @socket.io/admin-ui itself."""
    if speedups_impl != "compiled":
        pytest.skip("the Node reference control runs with the compiled speedups only")
    scene = Scene(False)  # only its clients are used: the server is Node's
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process([node, "admin_ref_server.js"], cwd=str(JS_DIR), stdin=-1, stdout=-1)
        try:
            assert process.stdout is not None
            first = b""
            with trio.fail_after(30):
                while not first.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    assert chunk, "admin_ref_server.js exited before listening"
                    first += chunk
            info = json.loads(first)
            out = await drive_admin_protocol(node, scene, f"http://127.0.0.1:{info['port']}")
        finally:
            process.kill()  # by PID: this process only
            with trio.move_on_after(10):
                await process.wait()
            nursery.cancel_scope.cancel()
    check_admin_protocol(out, "node-reference", info["pid"])


def check_admin_protocol(out: dict[str, Any], server_id: str, pid: int) -> None:
    assert out["refused"] == "invalid credentials"
    assert out["session_reused"] is True
    assert set(out["config"]["supportedFeatures"]) == {
        "EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"
    }
    sockets = {(s["nsp"], s["data"].get("name")): s for s in out["all_sockets"]}
    ada_s, bob_s = sockets[("/", "ada")], sockets[("/", "bob")]
    assert ada_s["transport"] == "websocket" and bob_s["transport"] == "polling"
    assert ada_s["id"] in ada_s["rooms"] and ada_s["handshake"]["address"] == "127.0.0.1"
    assert ada_s["handshake"]["query"]["EIO"] == "4"
    chat = [s for s in out["all_sockets"] if s["nsp"] == "/chat"]
    assert len(chat) == 1 and "lobby" in chat[0]["rooms"]
    assert any(s["nsp"] == "/admin" for s in out["all_sockets"])
    stats = out["server_stats"]
    assert stats["serverId"] == server_id and stats["pid"] == pid
    assert stats["clientsCount"] >= 4 and stats["pollingClientsCount"] == 1
    names = {n["name"]: n["socketsCount"] for n in stats["namespaces"]}
    assert names["/"] == 2 and names["/chat"] == 1 and names["/admin"] >= 1
    kinds = {e[0] for e in out["events"]}
    assert {"room_joined", "room_left", "socket_disconnected"} <= kinds
    joined = [e for e in out["events"] if e[0] == "room_joined" and e[2] == "vip"]
    assert {e[3] for e in joined} == {ada_s["id"], bob_s["id"]}
    aggregated = {e["type"] for e in out["stats_after"]["aggregatedEvents"]}
    assert {"packetsIn", "packetsOut", "bytesIn", "bytesOut"} & aggregated


async def test_event_reports_in_development_mode(node: str) -> None:
    scene = Scene(False)
    seen: list[list[Any]] = []
    async with serving(scene.sio) as port:
        url = f"http://127.0.0.1:{port}"
        watcher = vt.SocketIOClient(url, namespaces=("/admin",), transports=("websocket",))

        @watcher.on("*", namespace="/admin")
        def anything(event: str, *args: Any) -> None:
            seen.append([event, *args])

        async with watcher:
            async with scene.clients(url):
                with trio.fail_after(10):
                    while not any(e[0] == "socket_updated" for e in seen) and not any(
                        e[0] == "server_stats" and e[1]["aggregatedEvents"] for e in seen
                    ):
                        await trio.sleep(0.05)
    received = [e for e in seen if e[0] == "event_received"]
    sent = [e for e in seen if e[0] == "event_sent"]
    assert [e[3] for e in received] == [["ping", 0], ["ping", 1], ["ping", 2]]
    assert [e[3] for e in sent] == [["pong", 0], ["pong", 1], ["pong", 2]]
    assert all(e[1] == "/" and isinstance(e[4], str) and e[4].endswith("Z") for e in received + sent)
    connected = [e[1] for e in seen if e[0] == "socket_connected"]
    assert {(s["nsp"], s["data"].get("name")) for s in connected} >= {("/", "ada"), ("/", "bob"), ("/chat", None)}


# ---------------------------------------------------------------------------- the dashboard, in Chromium


def static_pages(root: Path) -> Any:
    async def pages(request: vt.Request) -> vt.Response:
        relative = request.path.lstrip("/") or "index.html"
        path = (root / relative).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            return vt.Response.text(404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return vt.Response(200, path.read_bytes(), [("content-type", content_type)])

    return pages


@pytest.fixture
def browser(node: str) -> str:
    require_peer(chromium_path() is not None and playwright_available() and UI_DIST.is_dir(),
                 "chromium, playwright-core and @socket.io/admin-ui/ui/dist")
    return node


async def test_admin_ui_dashboard_in_chromium(browser: str) -> None:
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            ui = await nursery.start(partial(vt.serve, None, "127.0.0.1", 0, process_request=static_pages(UI_DIST)))
            ui_origin = f"http://127.0.0.1:{ui.port}"
            scene = Scene(
                {"type": "basic", "username": "admin", "plaintext_password": "s3cret"},
                cors_origins=[ui_origin], cors_credentials=True,
            )
            server = await nursery.start(partial(scene.sio.serve, "127.0.0.1", 0))
            url = f"http://127.0.0.1:{server.port}"
            async with scene.clients(url) as (ada, bob, carol):
                ada_id = ada.sid("/")
                assert ada_id is not None

                async def chatter() -> None:  # events for the Events page while it is open
                    for i in range(1000):
                        await ada.call("ping", 100 + i)
                        await trio.sleep(0.3)

                async with trio.open_nursery() as chat:
                    chat.start_soon(chatter)
                    out = await run_node(browser, "admin_ui_browser.js", {
                        "uiUrl": ui_origin + "/", "serverUrl": url, "username": "admin", "password": "s3cret",
                        "badPassword": "nope", "shots": str(SHOTS), "expectSocket": ada_id, "socketNsp": "/",
                        "expectRoom": "everyone", "expectServer": "volleyio-test-server", "settle": 2000,
                    }, timeout=120)
                    chat.cancel_scope.cancel()  # before the clients close
                bob_id, carol_id = bob.sid("/"), carol.sid("/chat")
            nursery.cancel_scope.cancel()
    pages = out["pages"]
    assert out["refused"] is True
    assert bob_id is not None and carol_id is not None
    # the sockets and rooms pages show the namespace "/" (the dashboard: every namespace)
    for sid in (ada_id, bob_id):
        assert sid in pages["sockets"]
    assert carol_id not in pages["sockets"]
    assert "everyone" in pages["rooms"]
    assert "/chat" in pages["dashboard"] and "/admin" in pages["dashboard"]
    assert "volleyio-test-server" in pages["servers"]
    assert "websocket" in pages["socket"].lower() and "ada" in pages["socket"]
    assert "ping" in pages["events"] and "pong" in pages["events"]
    assert not [e for e in out["errors"] if "volleyio" in e.lower()]
