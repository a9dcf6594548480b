"""The Socket.IO Admin UI protocol (``@socket.io/admin-ui`` 0.5) on a volleyio server.

``sio.instrument(auth=...)`` does what the npm package's ``instrument(io, opts)`` does to
a Node server, so the Admin UI's dashboard (https://admin.socket.io or its ``ui/dist``
build served anywhere) can connect to volleyio:

* an ``/admin`` namespace (``namespace=``) guarded by a middleware: ``auth=False`` (no
  authentication) or ``{"type": "basic", "username": ..., "password": <bcrypt hash>}``
  (as Node; verified with the ``bcrypt`` package, in a worker thread) or
  ``{"type": "basic", "username": ..., "plaintext_password": ...}`` (compared in
  constant time). A client that authenticated gets ``session`` (a session id) and can
  reconnect with ``{"sessionId": ...}``; sessions live in memory (the latest 1,000).
* on connect: ``config`` (``supportedFeatures``) and, in development mode, ``all_sockets``;
* every 2 s (``stats_interval``): ``server_stats`` (server id, hostname, pid, uptime,
  client counts, per-namespace socket counts and the aggregated events of the last period:
  ``rawConnection``, ``rawDisconnection`` by reason, ``packetsIn``/``packetsOut``,
  ``bytesIn``/``bytesOut`` -- read from the Engine.IO counters, so nothing is counted per
  message for it);
* in development mode (``mode="development"``, the default as in Node without
  ``NODE_ENV``): ``socket_connected``, ``socket_disconnected``, ``socket_updated`` (the
  transport after an upgrade, noticed at the next stats tick), ``room_joined`` /
  ``room_left`` (rooms joined or left through volleyio's API; the room named after the
  socket id is part of ``socket_connected``), ``event_received`` / ``event_sent``
  (``Socket.emit`` and ``call``; broadcasts are not reported, as in Node);
* the operations the dashboard sends, unless ``readonly``: ``emit``, ``join``,
  ``leave``, ``_disconnect`` (with the ``MJOIN``/``MLEAVE``/``MDISCONNECT`` semantics of
  Socket.IO v4: every socket of the namespace, or of the room given as filter).

When the dashboard is served from another origin, the server needs CORS with
credentials for that origin (``cors_origins=[...], cors_credentials=True``), as Node does.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket as _socket
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Union

import trio

from ..errors import VolleyError
from ..socketio.server import ConnectionRefusedError

if TYPE_CHECKING:  # pragma: no cover
    from ._socketio_server import Namespace, Socket, SocketIOServer

__all__ = ["AdminUI", "AdminAuth"]

#: ``False``, or a dict: ``{"type": "basic", "username": ..., "password": <bcrypt hash>}``
#: or ``{"type": "basic", "username": ..., "plaintext_password": ...}``.
AdminAuth = Union[Literal[False], dict[str, str]]

_MAX_SESSIONS = 1000


def _now() -> str:
    """``new Date()`` as JSON puts it: ISO 8601, milliseconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """``socket.data`` as the dashboard can show it (what JSON cannot carry becomes text)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _json_safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_safe(v) for v in value]
        return repr(value)
    return value


class AdminUI:
    """The instrumentation made by :meth:`SocketIOServer.instrument` (see the module
    documentation). ``namespace`` is the admin :class:`Namespace`."""

    def __init__(
        self,
        server: SocketIOServer,
        *,
        auth: AdminAuth,
        namespace: str = "/admin",
        readonly: bool = False,
        server_id: str | None = None,
        mode: Literal["development", "production"] = "development",
        stats_interval: float = 2.0,
    ) -> None:
        if mode not in ("development", "production"):
            raise ValueError("mode is 'development' or 'production'")
        self.server = server
        self.development = mode == "development"
        self.readonly = readonly
        self.stats_interval = stats_interval
        self.server_id = server_id or _socket.gethostname()
        self._started = time.monotonic()
        self._sessions: OrderedDict[str, None] = OrderedDict()
        self._check = self._make_check(auth)
        self._transports: dict[str, str] = {}  # socket id -> transport last reported
        self._last_totals: dict[str, Any] | None = None
        self.features = [] if readonly else ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        self.features.append("AGGREGATED_EVENTS")
        if self.development:
            self.features.append("ALL_EVENTS")
        self.namespace: Namespace = server.of(namespace)
        self.namespace.use(self._authenticate)
        self.namespace.on("connect", self._on_admin_connect)
        if not readonly:
            self.namespace.on("emit", self._op_emit)
            self.namespace.on("join", self._op_join)
            self.namespace.on("leave", self._op_leave)
            self.namespace.on("_disconnect", self._op_disconnect)

    # ------------------------------------------------------------------ authentication

    def _make_check(self, auth: AdminAuth) -> Any:
        if auth is False:
            return None
        if not isinstance(auth, dict) or auth.get("type") != "basic" or "username" not in auth:
            raise VolleyError("auth is False or {'type': 'basic', 'username': ..., 'password': <bcrypt hash>}")
        username = auth["username"]
        if "plaintext_password" in auth:
            expected = auth["plaintext_password"].encode()

            def check_plain(user: Any, password: Any) -> bool:
                return (
                    isinstance(user, str) and isinstance(password, str)
                    and hmac.compare_digest(user.encode(), username.encode())
                    & hmac.compare_digest(password.encode(), expected)
                )

            return check_plain
        hashed = auth.get("password", "")
        try:
            import bcrypt
        except ImportError:
            raise VolleyError(
                "a bcrypt password hash needs the bcrypt package (pip install bcrypt), "
                "or use 'plaintext_password'"
            ) from None
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise VolleyError("the 'password' field must be a valid bcrypt hash")
        hashed_bytes = hashed.encode()

        def check_bcrypt(user: Any, password: Any) -> bool:
            if not isinstance(user, str) or not isinstance(password, str):
                return False
            try:
                match = bool(bcrypt.checkpw(password.encode(), hashed_bytes))
            except ValueError:
                return False
            return match and hmac.compare_digest(user.encode(), username.encode())

        return check_bcrypt

    async def _authenticate(self, socket: Socket, auth: Any) -> None:
        if self._check is None:
            return
        auth = auth if isinstance(auth, dict) else {}
        session_id = auth.get("sessionId")
        if isinstance(session_id, str) and session_id in self._sessions:
            return
        check = self._check
        if await trio.to_thread.run_sync(check, auth.get("username"), auth.get("password")):
            session_id = secrets.token_hex(8)
            self._sessions[session_id] = None
            while len(self._sessions) > _MAX_SESSIONS:
                self._sessions.popitem(last=False)
            await socket.emit("session", session_id)  # goes out right after the CONNECT answer
            return
        raise ConnectionRefusedError("invalid credentials")

    # ------------------------------------------------------------------ to the dashboard

    async def _on_admin_connect(self, socket: Socket, auth: Any) -> None:
        await socket.emit("config", {"supportedFeatures": self.features})
        if self.development:
            sockets = self._all_sockets()
            if socket not in sockets:
                sockets.append(socket)  # connecting: in its namespace right after this handler
            await socket.emit("all_sockets", [self.serialize(s) for s in sockets])

    def _all_sockets(self) -> list[Socket]:
        return [s for nsp in list(self.server.namespaces.values()) for s in list(nsp.sockets.values())]

    def serialize(self, socket: Socket) -> dict[str, Any]:
        """A socket as the dashboard's ``SerializedSocket``."""
        handshake = socket.handshake
        headers = handshake.headers
        address = headers.get("cf-connecting-ip") or headers.get("x-forwarded-for") or handshake.address
        return {
            "id": socket.id,
            "clientId": socket.eio_sid[:12],
            "transport": socket.transport,
            "nsp": socket.namespace,
            "data": _json_safe(socket.data),
            "handshake": {
                "address": address,
                "headers": headers,
                "query": dict(handshake.query),
                "issued": handshake.issued,
                "secure": handshake.secure,
                "time": handshake.time,
                "url": handshake.url,
                "xdomain": handshake.xdomain,
            },
            "rooms": sorted(socket.rooms),
        }

    def _send(self, event: str, *args: Any) -> None:
        # Straight to the core (no checkpoint, callable from the server's sync hooks).
        try:
            self.server.core.broadcast(self.namespace.name, event, *args)
        except (TypeError, ValueError):  # an argument JSON cannot carry (an event's NaN...)
            pass

    # ------------------------------------------------------------------ the server's hooks

    def socket_connected(self, socket: Socket) -> None:
        self._transports[socket.id] = socket.transport
        self._send("socket_connected", self.serialize(socket), _now())

    def socket_disconnected(self, socket: Socket, reason: str) -> None:
        self._transports.pop(socket.id, None)
        self._send("socket_disconnected", socket.namespace, socket.id, reason, _now())

    def room_changed(self, socket: Socket, room: str, joined: bool) -> None:
        self._send("room_joined" if joined else "room_left", socket.namespace, room, socket.id, _now())

    def event_received(self, socket: Socket, event: Any, args: list[Any]) -> None:
        if socket.nsp is not self.namespace:
            self._send("event_received", socket.namespace, socket.id, [event, *args], _now())

    def event_sent(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        if socket.nsp is not self.namespace:
            self._send("event_sent", socket.namespace, socket.id, [event, *args], _now())

    # ------------------------------------------------------------------ server_stats

    def stats(self) -> dict[str, Any]:
        """The ``server_stats`` payload (the aggregated events since the previous call)."""
        core = self.server.engineio.core
        stats = core.statistics()
        totals: dict[str, Any] = {
            "rawConnection": stats["sessions_opened"],
            "closes": core.closes(),
            "traffic": core.traffic(),
        }
        events: list[dict[str, Any]] = []
        timestamp = int(time.time()) * 1000
        last = self._last_totals
        if last is not None:

            def push(kind: str, count: int, sub_type: str | None = None) -> None:
                if count > 0:
                    event: dict[str, Any] = {"timestamp": timestamp, "type": kind, "count": count}
                    if sub_type is not None:
                        event["subType"] = sub_type
                    events.append(event)

            push("rawConnection", totals["rawConnection"] - last["rawConnection"])
            for reason, count in totals["closes"].items():
                push("rawDisconnection", count - last["closes"].get(reason, 0), reason)
            for key, kind in (("messages_in", "packetsIn"), ("messages_out", "packetsOut"),
                              ("bytes_in", "bytesIn"), ("bytes_out", "bytesOut")):
                now_sum = sum(t[key] for t in totals["traffic"].values())
                then_sum = sum(t[key] for t in last["traffic"].values())
                push(kind, now_sum - then_sum)
        self._last_totals = totals
        return {
            "serverId": self.server_id,
            "hostname": _socket.gethostname(),
            "pid": os.getpid(),
            "uptime": time.monotonic() - self._started,
            "clientsCount": stats["sessions"],
            "pollingClientsCount": stats["polling"],
            "aggregatedEvents": events,
            "namespaces": [
                {"name": name, "socketsCount": len(nsp.sockets)} for name, nsp in self.server.namespaces.items()
            ],
        }

    async def run(self) -> None:
        """Emit ``server_stats`` every ``stats_interval`` (and the transport updates)."""
        while True:
            self._send("server_stats", self.stats())
            if self.development:
                for socket in self._all_sockets():
                    transport = socket.transport
                    if self._transports.get(socket.id, transport) != transport:
                        self._send("socket_updated", {"id": socket.id, "nsp": socket.namespace, "transport": transport})
                    self._transports[socket.id] = transport
            self.server._flush()
            await trio.sleep(self.stats_interval)

    # ------------------------------------------------------------------ operations

    def _targets(self, nsp_name: Any, room: Any) -> list[Socket]:
        nsp = self.server.namespaces.get(nsp_name) if isinstance(nsp_name, str) else None
        if nsp is None:
            return []
        if isinstance(room, str) and room:
            members = nsp.members(room)
            return [s for sid, s in list(nsp.sockets.items()) if sid in members]
        return list(nsp.sockets.values())

    async def _op_emit(self, admin: Socket, nsp: Any, room: Any, event: Any, *args: Any) -> None:
        if isinstance(nsp, str) and nsp in self.server.namespaces and isinstance(event, str):
            await self.server.emit(event, *args, to=room if isinstance(room, str) and room else None, namespace=nsp)

    async def _op_join(self, admin: Socket, nsp: Any, room: Any, room_filter: Any = None) -> None:
        if isinstance(room, str):
            for socket in self._targets(nsp, room_filter):
                await socket.join(room)

    async def _op_leave(self, admin: Socket, nsp: Any, room: Any, room_filter: Any = None) -> None:
        if isinstance(room, str):
            for socket in self._targets(nsp, room_filter):
                await socket.leave(room)

    async def _op_disconnect(self, admin: Socket, nsp: Any, close: Any = False, room_filter: Any = None) -> None:
        for socket in self._targets(nsp, room_filter):
            await socket.disconnect(close=bool(close))
