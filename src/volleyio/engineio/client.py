"""A sans-I/O Engine.IO v4 client: handshake, long-polling, upgrade probe, heartbeat.

The I/O layer (a trio client) performs the HTTP requests and WebSocket the client asks
for and reports their results; the client decides what to send and when.

Long-polling loop::

    client.handshake_request()             -> ClientRequest (GET, no sid)
    client.poll_response(status, body, now) for that GET and every later GET
    client.poll_request()                  -> the next GET to start, or None
    client.post_request()                  -> a POST with buffered packets, or None
    client.post_response(status, now)      when the POST completes

Only one GET and one POST are ever in flight (the server's overlap rule). Call
``poll_request``/``post_request`` again after every reported result and after
``send``; ``set_waker`` says when a call may now return something.

Upgrade (when the server offers ``websocket``): open ``client.websocket_request()``,
report ``websocket_opened``; the client sends ``2probe``, waits for ``3probe``, stops
starting GETs/POSTs, waits for the in-flight ones to finish (the server answers the
GET with a noop), then sends ``5`` and moves the buffer to the WebSocket.

If the WebSocket cannot be opened, closes, or the probe times out (the I/O layer
calls ``fail_upgrade``), the client stays on polling and resumes it: nothing buffered is
lost, because packets only leave the buffer once the upgrade is done.

Heartbeat: the server pings; the client answers ``3`` and closes with "ping timeout"
if no ping arrives within ``pingInterval + pingTimeout`` (``next_deadline``).

POST batches hold at most ``maxPayload`` bytes (the JS client's rule) and at most 16
packets: python-engineio refuses a payload of more than 16 packets ("Too many packets
in payload"), so a bigger batch would kill the session against a python server.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .packets import (
    MAX_PACKETS_PER_PAYLOAD,
    EngineIOParseError,
    Packet,
    PacketType,
    decode_payload,
    decode_websocket_frame,
    encode_payload,
    encode_websocket_frame,
)

__all__ = [
    "ClientClosed",
    "ClientConfig",
    "ClientEvent",
    "ClientMessage",
    "ClientOpened",
    "ClientRequest",
    "ClientUpgraded",
    "EngineIOClient",
]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    path: str = "/engine.io/"
    transports: tuple[str, ...] = ("polling", "websocket")
    upgrade: bool = True
    extra_query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientRequest:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ClientOpened:
    sid: str
    upgrades: tuple[str, ...]
    ping_interval_ms: int
    ping_timeout_ms: int
    max_payload: int


@dataclass(frozen=True, slots=True)
class ClientMessage:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ClientUpgraded:
    transport: str


@dataclass(frozen=True, slots=True)
class ClientClosed:
    """``reason``: "forced close" (we closed), "transport close" (server closed),
    "transport error", "parse error" or "ping timeout"."""

    reason: str
    description: str = ""


ClientEvent = Union[ClientOpened, ClientMessage, ClientUpgraded, ClientClosed]


class _State(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"


class _Upgrade(enum.Enum):
    NONE = "none"
    PROBING = "probing"
    PAUSING = "pausing"
    DONE = "done"
    FAILED = "failed"


class EngineIOClient:
    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self.sid: str | None = None
        self.transport = "polling" if "polling" in self.config.transports else "websocket"
        self._state = _State.OPENING
        self._upgrade = _Upgrade.NONE
        self._outgoing: deque[Packet] = deque()
        self._outgoing_bytes = 0
        self._ws_frames: deque[str | bytes] = deque()
        self._ws_close = False
        self._get_in_flight = False
        self._post_in_flight = False
        self._events: deque[ClientEvent] = deque()
        self._waker: Callable[[], None] | None = None
        self._ping_deadline: float | None = None
        self.ping_interval_ms = 0
        self.ping_timeout_ms = 0
        self.max_payload = 1_000_000
        self.upgrades: tuple[str, ...] = ()

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def upgrade_state(self) -> str:
        """"none", "probing", "pausing", "done" or "failed"."""
        return self._upgrade.value

    @property
    def buffered_amount(self) -> int:
        """Approximate payload bytes queued and not yet handed to a request/frame."""
        return self._outgoing_bytes

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        self._waker = waker

    def take_events(self) -> list[ClientEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def next_deadline(self) -> float | None:
        return self._ping_deadline if self._state is _State.OPEN else None

    def handle_timers(self, now: float) -> None:
        if self._ping_deadline is not None and self._ping_deadline <= now and self._state is _State.OPEN:
            self._close("ping timeout", "")

    # ------------------------------------------------------------------ application

    def send(self, data: str | bytes) -> bool:
        if self._state is not _State.OPEN:
            return False
        self._queue(Packet(PacketType.MESSAGE, data if isinstance(data, str) else bytes(data)))
        return True

    def close(self) -> None:
        """Close from our side: buffered packets then ``1`` are still sent."""
        if self._state is not _State.OPEN:
            return
        self._queue(Packet(PacketType.CLOSE))
        self._close("forced close", "", keep_outgoing=True)

    # ------------------------------------------------------------------ requests

    def _query(self, transport: str, with_sid: bool) -> dict[str, str]:
        query = {**self.config.extra_query, "EIO": "4", "transport": transport}
        if with_sid and self.sid is not None:
            query["sid"] = self.sid
        return query

    def handshake_request(self) -> ClientRequest:
        self._get_in_flight = True
        return ClientRequest("GET", self.config.path, self._query("polling", with_sid=False))

    def poll_request(self) -> ClientRequest | None:
        if (
            self._state is not _State.OPEN
            or self.transport != "polling"
            or self._get_in_flight
            or self._upgrade is _Upgrade.PAUSING
        ):
            return None
        self._get_in_flight = True
        return ClientRequest("GET", self.config.path, self._query("polling", with_sid=True))

    def post_request(self) -> ClientRequest | None:
        # A closing client may still flush its final packets (ending with ``1``).
        if self.sid is None or self.transport != "polling" or self._post_in_flight or not self._outgoing:
            return None
        if self._upgrade is _Upgrade.PAUSING:
            return None
        batch: list[Packet] = []
        size = 0
        while self._outgoing and len(batch) < MAX_PACKETS_PER_PAYLOAD:
            packet = self._outgoing[0]
            packet_size = _payload_size(packet) + (1 if batch else 0)
            if batch and size + packet_size > self.max_payload:
                break
            batch.append(self._pop_outgoing())
            size += packet_size
        payload, _ = encode_payload(batch, max_packets=None)
        self._post_in_flight = True
        return ClientRequest(
            "POST",
            self.config.path,
            self._query("polling", with_sid=True),
            payload.encode("utf-8"),
            (("Content-Type", "text/plain;charset=UTF-8"),),
        )

    def poll_response(self, status: int, body: bytes, now: float) -> None:
        """Report the result of a GET (the handshake included)."""
        self._get_in_flight = False
        if self._state is _State.CLOSED:
            return
        if status != 200:
            self._close("transport error", f"poll returned HTTP {status}")
            return
        try:
            packets = decode_payload(body)
        except EngineIOParseError as exc:
            self._close("parse error", str(exc))
            return
        for packet in packets:
            self._on_packet(packet, now)
            if self.closed:
                return
        self._maybe_finish_pause()
        self._wake()

    def post_response(self, status: int, now: float) -> None:
        self._post_in_flight = False
        if self._state is _State.CLOSED:
            return
        if status != 200:
            self._close("transport error", f"post returned HTTP {status}")
            return
        self._maybe_finish_pause()
        self._wake()

    def request_failed(self, now: float) -> None:
        """A GET or POST failed at the network level."""
        self._get_in_flight = self._post_in_flight = False
        if self._state is not _State.CLOSED:
            self._close("transport error", "request failed")

    # ------------------------------------------------------------------ WebSocket

    def websocket_request(self) -> ClientRequest:
        """The WebSocket to open: the upgrade probe when a session exists, else a
        WebSocket-only handshake."""
        return ClientRequest("GET", self.config.path, self._query("websocket", with_sid=self.sid is not None))

    def websocket_opened(self, now: float) -> None:
        if self.sid is None:
            self.transport = "websocket"
            return
        if self._state is _State.OPEN and self._upgrade is _Upgrade.NONE:
            self._upgrade = _Upgrade.PROBING
            self._ws_frames.append(encode_websocket_frame(Packet(PacketType.PING, "probe")))
            self._wake()

    def websocket_message(self, message: str | bytes, now: float) -> None:
        if self._state is _State.CLOSED:
            return
        try:
            packet = decode_websocket_frame(message)
        except EngineIOParseError as exc:
            if self.transport == "websocket":
                self._close("parse error", str(exc))
            else:
                self._fail_upgrade()
            return
        if self._upgrade is _Upgrade.PROBING:
            if packet.type is PacketType.PONG and packet.data == "probe":
                self._upgrade = _Upgrade.PAUSING
                self._maybe_finish_pause()
            else:
                self._fail_upgrade()
            return
        if self.transport == "websocket":
            self._on_packet(packet, now)
            self._wake()

    def take_websocket_outgoing(self) -> tuple[list[str | bytes], bool]:
        """``(frames to send, close the WebSocket afterwards)``."""
        if self.transport == "websocket":
            while self._outgoing:
                self._ws_frames.append(encode_websocket_frame(self._pop_outgoing()))
        frames = list(self._ws_frames)
        self._ws_frames.clear()
        close = self._ws_close or (self._state is _State.CLOSED and self.transport == "websocket")
        return frames, close

    def websocket_closed(self, now: float) -> None:
        """The WebSocket closed, or could not be opened at all."""
        if self.transport == "websocket":
            if self._state is not _State.CLOSED:
                self._close("transport close", "websocket closed")
        elif self._upgrade in (_Upgrade.NONE, _Upgrade.PROBING, _Upgrade.PAUSING) and self.sid is not None:
            self._fail_upgrade()

    def fail_upgrade(self) -> None:
        """Give up the upgrade (e.g. the probe timed out): stay on polling."""
        if self.transport == "polling" and self._upgrade is not _Upgrade.FAILED:
            self._fail_upgrade()

    # ------------------------------------------------------------------ internals

    def _queue(self, packet: Packet) -> None:
        self._outgoing.append(packet)
        self._outgoing_bytes += len(packet.data)
        self._wake()

    def _pop_outgoing(self) -> Packet:
        packet = self._outgoing.popleft()
        self._outgoing_bytes -= len(packet.data)
        return packet

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker()

    def _fail_upgrade(self) -> None:
        self._upgrade = _Upgrade.FAILED
        self._ws_close = True
        self._wake()

    def _maybe_finish_pause(self) -> None:
        if self._upgrade is not _Upgrade.PAUSING or self._get_in_flight or self._post_in_flight:
            return
        self._upgrade = _Upgrade.DONE
        self.transport = "websocket"
        self._ws_frames.append(encode_websocket_frame(Packet(PacketType.UPGRADE)))
        self._events.append(ClientUpgraded("websocket"))
        self._wake()

    def _on_packet(self, packet: Packet, now: float) -> None:
        if self._state is _State.OPENING:
            if packet.type is not PacketType.OPEN:
                self._close("parse error", "first packet is not open")
                return
            self._on_open(packet, now)
            return
        if packet.type is PacketType.PING:
            self._ping_deadline = now + (self.ping_interval_ms + self.ping_timeout_ms) / 1000
            self._queue(Packet(PacketType.PONG, packet.data))
        elif packet.type is PacketType.MESSAGE:
            self._events.append(ClientMessage(packet.data))
        elif packet.type is PacketType.CLOSE:
            self._close("transport close", "server closed the session")
        # noop (sent while upgrading), pong, upgrade and a repeated open are ignored

    def _on_open(self, packet: Packet, now: float) -> None:
        try:
            info: Any = json.loads(packet.data) if isinstance(packet.data, str) else {}
            sid = info["sid"]
            upgrades = tuple(info["upgrades"])
            ping_interval = info["pingInterval"]
            ping_timeout = info["pingTimeout"]
            max_payload = info.get("maxPayload", 1_000_000)
            valid = isinstance(sid, str) and sid and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (ping_interval, ping_timeout, max_payload)
            )
        except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: nested too deeply
            valid = False
        if not valid:
            self._close("parse error", "invalid open packet")
            return
        self.sid = sid
        self.upgrades = upgrades
        self.ping_interval_ms = ping_interval
        self.ping_timeout_ms = ping_timeout
        self.max_payload = max_payload
        self._state = _State.OPEN
        self._ping_deadline = now + (ping_interval + ping_timeout) / 1000
        self._events.append(ClientOpened(sid, upgrades, ping_interval, ping_timeout, max_payload))

    @property
    def should_upgrade(self) -> bool:
        """True when the I/O layer should open :meth:`websocket_request` to upgrade."""
        return (
            self._state is _State.OPEN
            and self.transport == "polling"
            and self._upgrade is _Upgrade.NONE
            and self.config.upgrade
            and "websocket" in self.upgrades
            and "websocket" in self.config.transports
        )

    def _close(self, reason: str, description: str, keep_outgoing: bool = False) -> None:
        self._state = _State.CLOSED
        self._ping_deadline = None
        if not keep_outgoing:
            self._outgoing.clear()
            self._outgoing_bytes = 0
        if self._upgrade in (_Upgrade.PROBING, _Upgrade.PAUSING):
            # The final packets (ending with ``1``) go out on the transport still in use.
            self._upgrade = _Upgrade.FAILED
            self._ws_close = True
        self._events.append(ClientClosed(reason, description))
        self._wake()


def _payload_size(packet: Packet) -> int:
    """Bytes the packet takes in a polling payload (without the separator)."""
    if isinstance(packet.data, str):
        return 1 + len(packet.data.encode("utf-8"))
    return 1 + 4 * ((len(packet.data) + 2) // 3)
