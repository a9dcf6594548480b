"""Helpers shared by the tests/test_websocket_*.py files (independent of the code under test)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

from volleyio.errors import ProtocolError
from volleyio.websocket import ConnectionClosed, Event, Role, WebSocketConnection

FIXED_KEY = b"\x37\xfa\x21\x3d"


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes = FIXED_KEY,
    length: Optional[int] = None,
) -> bytes:
    """Encode a frame by hand (a second implementation, so encoder bugs cannot hide)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def unmask_frames(data: bytes) -> list[tuple[int, bool, int, bytes]]:
    """Decode a byte string of complete frames (masked or not) by hand."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        key = None
        if b1 & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + n]
        pos += n
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((b0 & 0x0F, bool(b0 & 0x80), (b0 >> 4) & 7, payload))
    return frames


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def server(**options: object) -> WebSocketConnection:
    return WebSocketConnection(Role.SERVER, **options)  # type: ignore[arg-type]


def client(**options: object) -> WebSocketConnection:
    return WebSocketConnection(Role.CLIENT, **options)  # type: ignore[arg-type]


def sent_close_code(conn: WebSocketConnection) -> Optional[int]:
    return None if conn.close_sent is None else conn.close_sent.code


@dataclass
class CountingExtension:
    """A test-only identity extension that records every call (claims RSV1 like deflate).

    ``transform`` XORs every byte with 0x5A so that a missing decode call is visible.
    """

    name: str = "x-counting"
    rsv_mask: int = 0x4
    transform: bool = True
    decode_calls: list[tuple[bytes, bool, int, bool, int]] = field(default_factory=list)
    encode_calls: list[tuple[bytes, int, Optional[bool]]] = field(default_factory=list)
    fail_with: Optional[Exception] = None

    def _xor(self, data: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in data) if self.transform else data

    def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
        self.decode_calls.append((payload, first, rsv, fin, max_length))
        if self.fail_with is not None:
            raise self.fail_with
        out = self._xor(payload)
        if len(out) > max_length:
            raise ProtocolError("decoded fragment over budget", 1009)
        return out

    def encode_message(self, payload: bytes, opcode: int, compress: Optional[bool]) -> tuple[bytes, int]:
        self.encode_calls.append((payload, opcode, compress))
        if compress is False:
            return payload, 0
        return self._xor(payload), self.rsv_mask


def events_until_closed(conn: WebSocketConnection) -> list[Event]:
    return conn.events()


def closed_event(events: list[Event]) -> Optional[ConnectionClosed]:
    for event in events:
        if isinstance(event, ConnectionClosed):
            return event
    return None


# The helpers above are the tests' independent reference; pin them to RFC 6455 section 5.7.
def test_raw_frame_matches_rfc6455_examples() -> None:
    assert raw_frame(0x1, b"Hello", mask=False) == bytes.fromhex("810548656c6c6f")
    assert raw_frame(0x1, b"Hello") == bytes.fromhex("818537fa213d7f9f4d5158")
    assert raw_frame(0x2, b"\0" * 256, mask=False)[:4] == bytes.fromhex("827e0100")
    assert raw_frame(0x2, b"\0" * 65536, mask=False)[:10] == bytes.fromhex("827f0000000000010000")


def test_unmask_frames_inverts_raw_frame() -> None:
    data = raw_frame(0x1, b"Hel", fin=False) + raw_frame(0x0, b"lo", mask=False) + raw_frame(0x9, b"")
    assert unmask_frames(data) == [(1, False, 0, b"Hel"), (0, True, 0, b"lo"), (9, True, 0, b"")]
