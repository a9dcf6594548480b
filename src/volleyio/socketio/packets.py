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
from itertools import accumulate
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


@dataclass(slots=True)  # not frozen: made per message, and a frozen dataclass costs 3x to build
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


# The nesting-depth pre-check, in a few linear C-level passes (no per-token Python loop,
# no regex that can rescan): drop every escape pair (a backslash and the character it
# escapes), then everything between quote pairs (an unterminated string runs to the end),
# then everything but brackets, and take the running maximum of the bracket depth.
# On valid JSON this is exactly the nesting depth. On invalid JSON it may differ only
# after the first syntax error -- where the JSON scanner stops, so it never recurses
# past what this counted.
_ESCAPE_PAIR = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__


def _text_depth_exceeds(text: str, max_depth: int) -> bool:
    """True if the JSON ``text`` nests deeper than ``max_depth`` (linear time)."""
    # Cheap pre-check: fewer opening brackets than the cap cannot nest deeper than it.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    if '"' in text:
        if "\\" in text:
            text = _ESCAPE_PAIR.sub("", text)
        text = "".join(text.split('"')[::2])
    brackets = _NOT_BRACKETS.sub("", text)
    return max(accumulate(map(_DEPTH_STEP, brackets)), default=0) > max_depth


def _parse_constant(name: str) -> Any:
    raise SocketIODecodeError(f"{name} is not valid JSON")


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise SocketIODecodeError("number out of range")
    return value


# One decoder per integer cap: building a JSONDecoder (and its scanner) per message costs
# more than decoding a small payload.
_DECODERS: dict[int, json.JSONDecoder] = {}
_ScanOnce = Callable[[str, int], "tuple[Any, int]"]


def _decoder_for(max_integer_digits: int) -> json.JSONDecoder:
    decoder = _DECODERS.get(max_integer_digits)
    if decoder is None:

        def parse_int(digits: str) -> int:
            if len(digits) - digits.startswith("-") > max_integer_digits:
                raise SocketIODecodeError("integer too long")
            return int(digits)

        decoder = json.JSONDecoder(parse_constant=_parse_constant, parse_int=parse_int, parse_float=_parse_float)
        if len(_DECODERS) < 16:
            _DECODERS[max_integer_digits] = decoder
    return decoder


def _loads(text: str, max_depth: int, max_integer_digits: int) -> Any:
    if _text_depth_exceeds(text, max_depth):
        raise SocketIODecodeError("JSON nested too deeply")
    decoder = _decoder_for(max_integer_digits)
    decode = decoder.decode
    scan_once: _ScanOnce = decoder.scan_once  # type: ignore[attr-defined]
    try:
        try:
            # The C scanner directly: what ``decode`` does, minus its whitespace regexes.
            # Anything unusual (surrounding whitespace, an error) takes the full path.
            value, end = scan_once(text, 0)
            if end == len(text):
                return value
            return decode(text)
        except StopIteration:
            return decode(text)  # raises the JSONDecodeError with its message
        except RecursionError:
            return _with_recursion_headroom(lambda: decode(text), max_depth)
    except SocketIODecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise SocketIODecodeError(f"invalid JSON payload: {exc}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _make_json_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
    with one C encoder kept for every call (``JSONEncoder`` builds one per call).

    Without circular-reference markers: a cycle ends in RecursionError, reported as a
    SocketIOEncodeError like any other data that cannot be sent."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    c_encode_basestring = getattr(json.encoder, "c_encode_basestring", None)
    if c_make_encoder is None or c_encode_basestring is None:  # pragma: no cover - CPython has _json
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    encoder = c_make_encoder(None, _not_serializable, c_encode_basestring, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(encoder(value, 0))

    return encode


_encode_json = _make_json_encoder()


def _dumps(value: Any, max_depth: int) -> str:
    try:
        try:
            text = _encode_json(value)
        except RecursionError:
            text = _with_recursion_headroom(lambda: _encode_json(value), max_depth)
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
    return _encode(packet.type, packet.namespace, packet.data, packet.id, max_depth)


_DATA_TYPES = frozenset({PacketType.EVENT, PacketType.ACK, PacketType.BINARY_EVENT, PacketType.BINARY_ACK})
_TYPE_CHARS = tuple(str(int(t)) for t in PacketType)
# Values that cannot hold binary: a list of only these needs no deep walk.
_FLAT = frozenset({str, int, float, bool, type(None)})


def _encode(
    packet_type: PacketType, namespace: str, data: Any, ack_id: int | None, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[str | bytes]:
    """:func:`encode_packet` without a :class:`Packet` (the server's hot path)."""
    buffers: list[bytes] = []
    if packet_type in _DATA_TYPES:
        flat = data.__class__ is list and all(item.__class__ in _FLAT for item in data)
        if not flat and data is not None and _has_binary(data, max_depth):
            data, buffers = _deconstruct(data, max_depth)
            packet_type = PacketType.BINARY_EVENT if packet_type in (
                PacketType.EVENT, PacketType.BINARY_EVENT
            ) else PacketType.BINARY_ACK
        elif packet_type is PacketType.BINARY_EVENT:
            packet_type = PacketType.EVENT
        elif packet_type is PacketType.BINARY_ACK:
            packet_type = PacketType.ACK
    head = _TYPE_CHARS[packet_type]
    if buffers:
        head += f"{len(buffers)}-"
    if namespace and namespace != "/":
        head += namespace + ","
    if ack_id is not None:
        if not (0 <= ack_id <= MAX_ACK_ID):
            raise SocketIOEncodeError("ack id out of range")
        head += str(ack_id)
    if data is not None:
        head += _dumps(data, max_depth)
    if buffers:
        return [head, *buffers]
    return [head]


# ----------------------------------------------------------------------------- decoder


_TYPES_BY_CHAR = {str(int(t)): t for t in PacketType}
_ASCII_DIGITS = re.compile("[0-9]*").match


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
            if attachments:
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
        packet_type = _TYPES_BY_CHAR.get(type_char)
        if packet_type is None:
            raise SocketIODecodeError(f"unknown packet type {type_char!r}")
        position = 1
        length = len(text)
        attachments = 0
        if packet_type is PacketType.BINARY_EVENT or packet_type is PacketType.BINARY_ACK:
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
        digits_match = _ASCII_DIGITS(text, position)  # "[0-9]*" always matches
        assert digits_match is not None
        position = digits_match.end()
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
        if packet_type is PacketType.EVENT and data.__class__ is list and data and data[0].__class__ is str:
            if data[0] in RESERVED_EVENTS:  # the common case of is_payload_valid, inlined
                raise SocketIODecodeError("invalid payload")
        elif not is_payload_valid(packet_type, data):
            raise SocketIODecodeError("invalid payload")
        return Packet(packet_type, namespace, data, ack_id), attachments
