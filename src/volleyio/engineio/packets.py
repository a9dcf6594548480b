"""Engine.IO v4 packets: the seven packet types and their two wire encodings.

* WebSocket: one packet per frame. A text frame is ``<type digit><data>``; a binary frame
  is a ``message`` packet carrying raw bytes, with no type byte.
* Long-polling payload: packets joined by the record separator ``\\x1e``. A binary message
  inside a payload is ``b`` followed by standard base64 (no ``4`` prefix).

Decoding is strict: an empty packet, an unknown type character, invalid base64 or
invalid UTF-8 raises :class:`EngineIOParseError` (the session then closes with
"parse error").
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "MAX_PACKETS_PER_PAYLOAD",
    "RECORD_SEPARATOR",
    "EngineIOParseError",
    "Packet",
    "PacketType",
    "PreparedPacket",
    "decode_payload",
    "decode_websocket_frame",
    "encode_payload",
    "encode_websocket_frame",
]

RECORD_SEPARATOR = "\x1e"
# python-engineio refuses payloads of more than 16 packets; capping our GET responses
# keeps python clients working (PROTOCOL-NOTES "Packets per payload").
MAX_PACKETS_PER_PAYLOAD = 16


class EngineIOParseError(ProtocolError):
    """An Engine.IO packet or payload could not be decoded."""


class PacketType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPE_BY_CHAR: dict[str, PacketType] = {str(int(t)): t for t in PacketType}


@dataclass(slots=True)  # not frozen: made per message, and a frozen dataclass costs 3x to build
class Packet:
    """One Engine.IO packet. ``data`` is ``bytes`` only for a binary ``MESSAGE``."""

    type: PacketType
    data: str | bytes = ""

    def __post_init__(self) -> None:
        if isinstance(self.data, (bytes, bytearray, memoryview)) and self.type is not PacketType.MESSAGE:
            raise ValueError("only message packets can carry binary data")

    @property
    def is_binary(self) -> bool:
        return not isinstance(self.data, str)


class PreparedPacket:
    """A message encoded once for many sessions (broadcast).

    Pass it to ``Session.send`` / ``EngineIOServer.send`` instead of ``str``/``bytes``.
    It holds the message ``data``, its WebSocket message (``websocket_message``: the
    ``4``-prefixed text, or the raw bytes of a binary message) and its polling payload
    entry (built on first use, then shared). ``frame_cache`` is a slot for the I/O layer:
    it may keep the encoded WebSocket frame there so that every receiver gets the same
    bytes. Instances are immutable apart from those caches.
    """

    __slots__ = ("data", "packet", "websocket_message", "_payload_entry", "frame_cache")

    def __init__(self, data: str | bytes | bytearray | memoryview) -> None:
        value: str | bytes = data if isinstance(data, str) else bytes(data)
        self.data = value
        self.packet = Packet(PacketType.MESSAGE, value)
        self.websocket_message: str | bytes = encode_websocket_frame(self.packet)
        self._payload_entry: str | None = None
        self.frame_cache: object = None

    @property
    def payload_entry(self) -> str:
        """The packet as one entry of a polling payload (``4text`` or ``b<base64>``)."""
        entry = self._payload_entry
        if entry is None:
            entry = self._payload_entry = _encode_payload_entry(self.packet)
        return entry

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"PreparedPacket({self.data!r:.60})"


def _decode_text_packet(text: str) -> Packet:
    if not text:
        raise EngineIOParseError("empty packet")
    packet_type = _TYPE_BY_CHAR.get(text[0])
    if packet_type is None:
        raise EngineIOParseError(f"unknown packet type {text[0]!r}")
    return Packet(packet_type, text[1:])


def encode_websocket_frame(packet: Packet) -> str | bytes:
    """Encode one packet as the payload of one WebSocket frame (``str`` → text frame)."""
    if isinstance(packet.data, str):
        return f"{int(packet.type)}{packet.data}"
    return bytes(packet.data)


def decode_websocket_frame(frame: str | bytes) -> Packet:
    """Decode one WebSocket message: a binary frame is a raw binary message packet."""
    if isinstance(frame, str):
        return _decode_text_packet(frame)
    return Packet(PacketType.MESSAGE, bytes(frame))


def _encode_payload_entry(packet: Packet) -> str:
    if isinstance(packet.data, str):
        return f"{int(packet.type)}{packet.data}"
    return "b" + base64.b64encode(packet.data).decode("ascii")


def encode_payload(
    packets: Iterable[Packet | PreparedPacket], max_packets: int | None = MAX_PACKETS_PER_PAYLOAD
) -> tuple[str, list[Packet | PreparedPacket]]:
    """Join packets into one polling payload.

    Returns ``(payload, leftover)``: at most ``max_packets`` packets are encoded (``None``
    means no cap) and the packets that did not fit are returned in order, for the next
    response. The caller encodes the payload as UTF-8.
    """
    pending = list(packets)
    if max_packets is not None:
        if max_packets < 1:
            raise ValueError("max_packets must be at least 1")
        pending, leftover = pending[:max_packets], pending[max_packets:]
    else:
        leftover = []
    return (
        RECORD_SEPARATOR.join(
            p.payload_entry if isinstance(p, PreparedPacket) else _encode_payload_entry(p) for p in pending
        ),
        leftover,
    )


def decode_payload(body: str | bytes) -> list[Packet]:
    """Split a polling payload (any number of packets) into packets, strictly."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineIOParseError("payload is not valid UTF-8") from exc
    else:
        text = body
    packets: list[Packet] = []
    for entry in text.split(RECORD_SEPARATOR):
        if entry.startswith("b"):
            try:
                data = base64.b64decode(entry[1:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EngineIOParseError("invalid base64 in binary packet") from exc
            packets.append(Packet(PacketType.MESSAGE, data))
        else:
            packets.append(_decode_text_packet(entry))
    return packets


def payload_packets(packets: Sequence[Packet]) -> str:
    """Encode all ``packets`` into one payload without a cap (client POST bodies)."""
    return encode_payload(packets, max_packets=None)[0]
