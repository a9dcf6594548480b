"""Socket.IO v5 packet codec (sans-I/O).

Wire format of the text part: ``<type>[<#attachments>-][<nsp>,][<ackId>][<JSON payload>]``.
A packet whose arguments contain binary becomes ``BINARY_EVENT``/``BINARY_ACK``: every
``bytes`` value is replaced, depth-first in encounter order, by
``{"_placeholder":true,"num":i}`` and the buffers follow as separate Engine.IO messages.

Every decode failure raises :class:`SocketIODecodeError`; the manager answers it by
closing the whole Engine.IO connection, as Node does. JSON follows strict JavaScript
semantics: ``NaN``/``Infinity`` are refused in both directions, nesting deeper than
``max_depth`` (1,000) is refused, integers longer than ``max_integer_digits`` are refused
before any quadratic-time conversion, ack ids must be below 2**53.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_INTEGER_DIGITS",
    "MAX_ACK_ID",
    "RESERVED_EVENTS",
    "Decoder",
    "Packet",
    "PacketType",
    "SocketIODecodeError",
    "SocketIOEncodeError",
    "encode_packet",
    "is_payload_valid",
]

DEFAULT_MAX_ATTACHMENTS = 10
DEFAULT_MAX_DEPTH = 1000
# Far below Python's 4,300-digit int() guard, and int() of this many digits is fast.
DEFAULT_MAX_INTEGER_DIGITS = 1000
MAX_ACK_ID = 2**53 - 1  # largest JavaScript safe integer
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

Binary = (bytes, bytearray, memoryview)


class SocketIODecodeError(ProtocolError):
    """A Socket.IO packet could not be decoded: the Engine.IO connection must close."""


class SocketIOEncodeError(ValueError):
    """The application asked to send something Socket.IO cannot carry (NaN, too deep...)."""


class PacketType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@dataclass(frozen=True, slots=True)
class Packet:
    """A Socket.IO packet. ``data`` is ``None`` when the packet has no payload (JSON
    ``null`` is never a valid payload, so nothing is lost)."""

    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_payload_valid(packet_type: PacketType, payload: Any) -> bool:
    """Node's ``Decoder.isPayloadValid`` (``None`` = no payload)."""
    if packet_type is PacketType.CONNECT:
        return payload is None or isinstance(payload, dict)
    if packet_type is PacketType.DISCONNECT:
        return payload is None
    if packet_type is PacketType.CONNECT_ERROR:
        return isinstance(payload, (str, dict))
    if packet_type in (PacketType.EVENT, PacketType.BINARY_EVENT):
        if not isinstance(payload, list) or not payload:
            return False
        first = payload[0]
        return _is_number(first) or (isinstance(first, str) and first not in RESERVED_EVENTS)
    return isinstance(payload, list)  # ACK, BINARY_ACK


# ------------------------------------------------------------------------------ JSON


_T = TypeVar("_T")


def _with_recursion_headroom(func: Callable[[], _T], depth: int) -> _T:
    """Run ``func``; if CPython's recursion guard trips although the data is within our
    depth cap (3.11 counts C-level JSON recursion against ``sys.getrecursionlimit()``),
    retry once with enough headroom."""
    try:
        return func()
    except RecursionError:
        previous = sys.getrecursionlimit()
        sys.setrecursionlimit(previous + depth + 200)
        try:
            return func()
        finally:
            sys.setrecursionlimit(previous)


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _text_depth_exceeds(text: str, max_depth: int) -> bool:
    # Cheap pre-check: fewer opening brackets than the cap cannot nest deeper than it.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _loads(text: str, max_depth: int, max_integer_digits: int) -> Any:
    def parse_constant(name: str) -> Any:
        raise SocketIODecodeError(f"{name} is not valid JSON")

    def parse_int(digits: str) -> int:
        if len(digits) - digits.startswith("-") > max_integer_digits:
            raise SocketIODecodeError("integer too long")
        return int(digits)

    def parse_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise SocketIODecodeError("number out of range")
        return value

    if _text_depth_exceeds(text, max_depth):
        raise SocketIODecodeError("JSON nested too deeply")
    try:
        return _with_recursion_headroom(
            lambda: json.loads(
                text, parse_constant=parse_constant, parse_int=parse_int, parse_float=parse_float
            ),
            max_depth,
        )
    except SocketIODecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise SocketIODecodeError(f"invalid JSON payload: {exc}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(value: Any, max_depth: int) -> str:
    try:
        text = _with_recursion_headroom(
            lambda: json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
            max_depth,
        )
    except (ValueError, TypeError, RecursionError) as exc:
        raise SocketIOEncodeError(str(exc)) from None
    if not text.isascii() and _SURROGATE.search(text):
        # A lone surrogate cannot be written as UTF-8: fall back to \u escapes.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


# ----------------------------------------------------------------------- binary helpers


def _deconstruct(data: Any, max_depth: int) -> tuple[Any, list[bytes]]:
    """Replace every binary value by a placeholder, depth-first in encounter order.

    Also enforces the depth cap, so the JSON encoder never meets deeper data.
    """
    buffers: list[bytes] = []

    def walk(value: Any, depth: int) -> Any:
        if depth > max_depth:
            raise SocketIOEncodeError("data nested too deeply")
        if isinstance(value, Binary):
            buffers.append(bytes(value))
            return {"_placeholder": True, "num": len(buffers) - 1}
        if isinstance(value, (list, tuple)):
            return [walk(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {key: walk(item, depth + 1) for key, item in value.items()}
        return value

    previous = sys.getrecursionlimit()
    if previous < max_depth + 200:
        sys.setrecursionlimit(max_depth + 200 + previous)
    try:
        return walk(data, 1), buffers
    finally:
        sys.setrecursionlimit(previous)


def _has_binary(data: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise SocketIOEncodeError("data nested too deeply")
        if isinstance(value, Binary):
            return True
        if isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
    return False


def _reconstruct(data: Any, buffers: list[bytes]) -> Any:
    """Put the buffers back in place of their placeholders (iteratively: data may be
    up to ``max_depth`` deep)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and value.get("_placeholder") is True:
            num = value.get("num")
            if not isinstance(num, int) or isinstance(num, bool) or not 0 <= num < len(buffers):
                raise SocketIODecodeError("illegal attachments")
            return buffers[num]
        return value

    root = [data]
    stack: list[list[Any] | dict[str, Any]] = [root]
    while stack:
        container = stack.pop()
        # Replacing values in place is safe while iterating: no list or dict changes size.
        if isinstance(container, list):
            for index, item in enumerate(container):
                value = container[index] = resolve(item)
                if isinstance(value, (list, dict)):
                    stack.append(value)
        else:
            for key, item in container.items():
                value = container[key] = resolve(item)
                if isinstance(value, (list, dict)):
                    stack.append(value)
    return root[0]


# ----------------------------------------------------------------------------- encoder


def encode_packet(packet: Packet, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[str | bytes]:
    """Encode a packet as Engine.IO message payloads: one text header, then attachments.

    ``EVENT``/``ACK`` whose data holds binary are sent as ``BINARY_EVENT``/``BINARY_ACK``.
    """
    packet_type = packet.type
    data = packet.data
    buffers: list[bytes] = []
    if packet_type in (PacketType.EVENT, PacketType.ACK, PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        if data is not None and _has_binary(data, max_depth):
            data, buffers = _deconstruct(data, max_depth)
            packet_type = PacketType.BINARY_EVENT if packet_type in (
                PacketType.EVENT, PacketType.BINARY_EVENT
            ) else PacketType.BINARY_ACK
        elif packet_type is PacketType.BINARY_EVENT:
            packet_type = PacketType.EVENT
        elif packet_type is PacketType.BINARY_ACK:
            packet_type = PacketType.ACK
    if packet.id is not None and not (0 <= packet.id <= MAX_ACK_ID):
        raise SocketIOEncodeError("ack id out of range")
    parts = [str(int(packet_type))]
    if buffers:
        parts.append(f"{len(buffers)}-")
    if packet.namespace and packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if data is not None:
        parts.append(_dumps(data, max_depth))
    return ["".join(parts), *buffers]


# ----------------------------------------------------------------------------- decoder


class Decoder:
    """Turns Engine.IO messages into Socket.IO packets, reassembling attachments.

    Feed every message with :meth:`receive`; it returns a complete :class:`Packet` or
    ``None`` while attachments are still expected.
    """

    def __init__(
        self,
        *,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_integer_digits: int = DEFAULT_MAX_INTEGER_DIGITS,
    ) -> None:
        self.max_attachments = max_attachments
        self.max_depth = max_depth
        self.max_integer_digits = max_integer_digits
        self._pending: Packet | None = None
        self._expected = 0
        self._buffers: list[bytes] = []

    @property
    def reconstructing(self) -> bool:
        return self._pending is not None

    def receive(self, message: str | bytes) -> Packet | None:
        if isinstance(message, str):
            if self._pending is not None:
                raise SocketIODecodeError("got plaintext data when reconstructing a packet")
            packet, attachments = self._decode_text(message)
            if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
                self._pending = packet
                self._expected = attachments
                self._buffers = []
                return None
            return packet
        if self._pending is None:
            raise SocketIODecodeError("got binary data when not reconstructing a packet")
        self._buffers.append(bytes(message))
        if len(self._buffers) < self._expected:
            return None
        packet, buffers = self._pending, self._buffers
        self._pending, self._buffers, self._expected = None, [], 0
        return self._finish(packet, buffers)

    def _finish(self, packet: Packet, buffers: list[bytes]) -> Packet:
        data = _reconstruct(packet.data, buffers)
        return Packet(packet.type, packet.namespace, data, packet.id)

    def _decode_text(self, text: str) -> tuple[Packet, int]:
        if not text:
            raise SocketIODecodeError("empty packet")
        type_char = text[0]
        if type_char not in "0123456" or not type_char.isascii():
            raise SocketIODecodeError(f"unknown packet type {type_char!r}")
        packet_type = PacketType(int(type_char))
        position = 1
        length = len(text)
        attachments = 0
        if packet_type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
            dash = text.find("-", position)
            digits = text[position:dash] if dash != -1 else ""
            if dash == -1 or not digits or not (digits.isascii() and digits.isdigit()):
                raise SocketIODecodeError("illegal attachments")
            if len(digits) > 4 or int(digits) > self.max_attachments:
                raise SocketIODecodeError("too many attachments")
            attachments = int(digits)
            if attachments < 1:
                # socket.io-parser 4.2.x: a binary packet carries at least one attachment
                raise SocketIODecodeError("illegal attachments")
            position = dash + 1
        namespace = "/"
        if position < length and text[position] == "/":
            comma = text.find(",", position)
            if comma == -1:
                namespace = text[position:]
                position = length
            else:
                namespace = text[position:comma]
                position = comma + 1
        ack_id: int | None = None
        start = position
        while position < length and "0" <= text[position] <= "9":
            position += 1
        if position > start:
            if position - start > 16:
                raise SocketIODecodeError("ack id out of range")
            ack_id = int(text[start:position])
            if ack_id > MAX_ACK_ID:
                raise SocketIODecodeError("ack id out of range")
        data: Any = None
        if position < length:
            data = _loads(text[position:], self.max_depth, self.max_integer_digits)
            if data is None:
                raise SocketIODecodeError("invalid payload")
        if not is_payload_valid(packet_type, data):
            raise SocketIODecodeError("invalid payload")
        return Packet(packet_type, namespace, data, ack_id), attachments
