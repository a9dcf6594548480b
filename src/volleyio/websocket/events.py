"""Events a :class:`~volleyio.websocket.connection.WebSocketConnection` produces.

Small frozen, slotted dataclasses: cheap to create on the hot path, comparable in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = [
    "TextMessage",
    "BinaryMessage",
    "MessageChunk",
    "Ping",
    "Pong",
    "CloseReceived",
    "ConnectionClosed",
    "Event",
]


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message (all fragments assembled, UTF-8 validated and decoded)."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message (all fragments assembled)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageChunk:
    """One piece of a data message, delivered in streaming mode (``stream_messages=True``).

    Every data frame produces exactly one chunk (after the extension decoded it).
    ``data`` is ``str`` for text messages -- decoded incrementally, so a multi-byte
    character split across frames appears whole in the later chunk -- and ``bytes``
    for binary ones. ``first`` marks the message's first chunk, ``final`` its last; a
    single-frame message is one chunk with both set. Size, fragment-count and UTF-8
    limits are enforced exactly as for assembled messages.
    """

    data: Union[str, bytes]
    is_text: bool
    first: bool
    final: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping from the peer. With ``auto_pong=True`` (the default) the pong is already queued."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong from the peer (solicited or not)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a close frame. ``code`` is 1005 when the frame had no payload.

    When the connection had not sent a close frame yet, the echo is already queued
    (RFC 6455 section 5.5.1).
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection reached the CLOSED state; always the last event.

    ``code``/``reason`` are what the peer's close frame said (1005 for an empty one),
    or 1006 with an empty reason when no close frame arrived (EOF, or we failed the
    connection). ``clean`` is True when close frames were both sent and received.
    The code *we* sent, if any, is on ``WebSocketConnection.close_sent``; a
    protocol violation by the peer is on ``WebSocketConnection.failure``.
    """

    code: int
    reason: str
    clean: bool


Event = Union[TextMessage, BinaryMessage, MessageChunk, Ping, Pong, CloseReceived, ConnectionClosed]
