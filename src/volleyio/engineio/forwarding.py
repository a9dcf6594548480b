"""Cluster-wide Engine.IO sessions without sticky balancing: the sans-I/O rules.

Every node of a cluster gives its session ids a prefix, its node id and a dot
(``<node>.<random>``), so any node can tell who owns a session from the ``sid`` query
parameter alone (:func:`owner_of`). A request that lands on a node that does not own its
session is forwarded to the owner through Redis (one pub/sub channel per node,
:func:`node_channel`) and answered with what the owner says:

* a polling **POST**: the non-owner reads the body (``maxPayload`` applies), sends a
  :class:`Forward` with it; the owner feeds it to its core as if it had read it and
  replies a :class:`Reply` (status, headers, body) that the non-owner writes;
* a polling **GET**: the owner parks it like a local one and replies once it has packets
  (or its ping); if the client goes away first, the non-owner sends :class:`Cancel`
  (the owner ends the session as for a local GET whose connection closed);
* a **WebSocket upgrade** (or a WebSocket with a foreign sid): the non-owner sends a
  :class:`Forward` with ``upgrade=True``; on a ``101`` :class:`Reply` it accepts the
  WebSocket and relays the frames: client messages go to the owner as :class:`WsIn`
  (in order, on one Redis connection), the owner's as :class:`WsOut` (a batch and
  whether the transport closes after it); a client that goes away is a :class:`WsLost`.
  The session stays on its owner, whose core runs the probe and upgrade as usual.

Bounds (:class:`ForwardBudget`): a node forwards at most ``max_requests`` requests and
``max_bytes`` bytes of POST bodies at a time; beyond that it answers ``503`` at once.
A forwarded request whose owner does not answer in time, or whose owner is not
subscribed (``PUBLISH`` reached nobody: the node is gone), is answered like an unknown
session (:func:`unknown_sid_response`, status 400), as the owner itself would after a
restart. Messages are msgpack maps (:func:`encode` / :func:`decode`); a malformed one
raises :class:`ForwardDecodeError` and is dropped by the I/O layer.
"""

from __future__ import annotations

import importlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..errors import VolleyError

__all__ = [
    "Cancel",
    "Forward",
    "ForwardBudget",
    "ForwardDecodeError",
    "ForwardMessage",
    "Reply",
    "WsIn",
    "WsLost",
    "WsOut",
    "decode",
    "encode",
    "new_node_id",
    "node_channel",
    "owner_of",
    "sid_prefix",
    "unknown_sid_response",
]


class ForwardDecodeError(VolleyError, ValueError):
    """A forwarding message from Redis is not one of ours."""


def new_node_id() -> str:
    """A random node id (12 URL-safe characters, no dot)."""
    return secrets.token_hex(6)


def sid_prefix(node: str) -> str:
    """What the sids of ``node`` start with."""
    if not node or "." in node:
        raise ValueError("a node id is non-empty and has no dot")
    return node + "."


def owner_of(sid: str) -> str | None:
    """The node that owns ``sid`` (None for a sid without a node prefix)."""
    node, dot, _ = sid.partition(".")
    return node if dot and node else None


def node_channel(prefix: str, node: str) -> str:
    """The Redis pub/sub channel a node reads forwarded requests and replies from."""
    return f"{prefix}#eio-forward#{node}#"


def unknown_sid_response(cors_headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, list[tuple[str, str]], bytes]:
    """The answer to a forwarded request nobody answered: Engine.IO's "Session ID unknown"."""
    body = json.dumps({"code": 1, "message": "Session ID unknown"}, separators=(",", ":")).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return 400, headers + list(cors_headers), body


@dataclass(slots=True)
class Forward:
    """A request for the owner (``body`` for a POST; ``upgrade`` for a WebSocket)."""

    rid: int
    origin: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None = None
    upgrade: bool = False


@dataclass(slots=True)
class Reply:
    """The owner's answer to a :class:`Forward` (``raw``: a rendered refusal to write as is)."""

    rid: int
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None


@dataclass(slots=True)
class Cancel:
    """The client of a forwarded GET went away."""

    rid: int
    origin: str
    sid: str


@dataclass(slots=True)
class WsIn:
    """Client messages of a relayed WebSocket, in order."""

    rid: int
    origin: str
    messages: list[str | bytes]


@dataclass(slots=True)
class WsOut:
    """Messages for the client of a relayed WebSocket; ``closing``: close after them."""

    rid: int
    messages: list[str | bytes]
    closing: bool = False


@dataclass(slots=True)
class WsLost:
    """The client's WebSocket of a relayed session is gone."""

    rid: int
    origin: str


ForwardMessage = Forward | Reply | Cancel | WsIn | WsOut | WsLost


def _msgpack() -> Any:
    try:
        return importlib.import_module("msgpack")
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("cluster polling needs msgpack: pip install 'volleyio[redis]'") from exc


def encode(message: ForwardMessage) -> bytes:
    """The msgpack form of one forwarding message."""
    if isinstance(message, Forward):
        data: dict[str, object] = {
            "t": "fwd", "id": message.rid, "o": message.origin, "m": message.method, "p": message.path,
            "q": message.query, "h": message.headers, "b": message.body, "u": message.upgrade,
        }
    elif isinstance(message, Reply):
        data = {"t": "rep", "id": message.rid, "s": message.status, "h": message.headers, "b": message.body,
                "r": message.raw}
    elif isinstance(message, Cancel):
        data = {"t": "can", "id": message.rid, "o": message.origin, "sid": message.sid}
    elif isinstance(message, WsIn):
        data = {"t": "win", "id": message.rid, "o": message.origin, "d": message.messages}
    elif isinstance(message, WsOut):
        data = {"t": "wout", "id": message.rid, "d": message.messages, "c": message.closing}
    else:
        data = {"t": "wlost", "id": message.rid, "o": message.origin}
    return _msgpack().packb(data, use_bin_type=True)  # type: ignore[no-any-return]


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ForwardDecodeError("expected a map of strings")
    return value


def _messages(value: object) -> list[str | bytes]:
    if not isinstance(value, list) or not all(isinstance(m, (str, bytes)) for m in value):
        raise ForwardDecodeError("expected a list of messages")
    return value


def decode(data: bytes) -> ForwardMessage:
    """Parse one forwarding message (:class:`ForwardDecodeError` if it is not one)."""
    try:
        obj = _msgpack().unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types
        raise ForwardDecodeError(f"not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise ForwardDecodeError("not a map")
    kind = obj.get("t")
    rid = obj.get("id")
    if not isinstance(rid, int):
        raise ForwardDecodeError("no request id")
    try:
        if kind == "fwd":
            body = obj["b"]
            if body is not None and not isinstance(body, bytes):
                raise ForwardDecodeError("bad body")
            return Forward(rid, str(obj["o"]), str(obj["m"]), str(obj["p"]), _str_dict(obj["q"]),
                           _str_dict(obj["h"]), body, bool(obj["u"]))
        if kind == "rep":
            headers = obj["h"]
            if not isinstance(headers, list) or not all(
                isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
            ):
                raise ForwardDecodeError("bad headers")
            body = obj["b"]
            raw = obj["r"]
            if not isinstance(body, bytes) or (raw is not None and not isinstance(raw, bytes)):
                raise ForwardDecodeError("bad body")
            return Reply(rid, int(obj["s"]), [(h[0], h[1]) for h in headers], body, raw)
        if kind == "can":
            return Cancel(rid, str(obj["o"]), str(obj["sid"]))
        if kind == "win":
            return WsIn(rid, str(obj["o"]), _messages(obj["d"]))
        if kind == "wout":
            return WsOut(rid, _messages(obj["d"]), bool(obj["c"]))
        if kind == "wlost":
            return WsLost(rid, str(obj["o"]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ForwardDecodeError):
            raise
        raise ForwardDecodeError(f"bad {kind} message: {exc}") from None
    raise ForwardDecodeError(f"unknown message type {kind!r}")


class ForwardBudget:
    """What one node has in flight to other nodes: at most ``max_requests`` requests and
    ``max_bytes`` bytes of forwarded bodies. :meth:`take` says whether one more fits."""

    __slots__ = ("max_requests", "max_bytes", "requests", "bytes")

    def __init__(self, max_requests: int = 10_000, max_bytes: int = 8 << 20) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ValueError("forwarding bounds must be positive")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def take(self, size: int) -> bool:
        """Reserve room for one request of ``size`` body bytes (False: answer 503)."""
        if self.requests >= self.max_requests or (self.bytes + size > self.max_bytes and self.bytes > 0):
            return False
        self.requests += 1
        self.bytes += size
        return True

    def give_back(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
