"""The sans-I/O RFC 6455 connection, for both roles.

Bytes go in through :meth:`WebSocketConnection.receive_data`, events come out of
:meth:`~WebSocketConnection.events` / :meth:`~WebSocketConnection.next_event`, and
everything to write is collected by :meth:`~WebSocketConnection.data_to_send` as one
``bytes`` object. Nothing here does I/O or reads a clock.

A peer's protocol violation never raises out of ``receive_data``: the connection
*fails* (RFC 6455 section 7.1.7) -- it queues a close frame with the matching code
(1002 protocol error, 1007 invalid UTF-8, 1009 too big, 1011 internal error), records
the reason on :attr:`~WebSocketConnection.failure` and discards further input. Misuse
by the local application (sending after close, an invalid close code) raises.

Closing (RFC 6455 section 7): ``OPEN`` -> ``CLOSING`` once a close frame was sent or
received -> ``CLOSED``. The I/O layer's rule is simply: after every call, write
``data_to_send()``; when :attr:`~WebSocketConnection.state` is ``CLOSED``, close the
TCP connection. A server reaches ``CLOSED`` as soon as the close handshake completes
or it fails the connection (the server closes TCP first, section 7.1.1); a client
stays ``CLOSING`` until the server's EOF arrives (``receive_data(b"")``) -- the I/O
layer applies its close timeout to that wait and aborts when it expires.
"""

from __future__ import annotations

import codecs
import copy
import enum
import os
import sys
from codecs import getincrementaldecoder
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .. import _speedups
from ..errors import ConnectionClosedError, ProtocolError
from .events import (
    BinaryMessage,
    CloseReceived,
    ConnectionClosed,
    Event,
    MessageChunk,
    Ping,
    Pong,
    TextMessage,
)
from .extensions import Extension

__all__ = [
    "Role",
    "ConnectionState",
    "CloseInfo",
    "WebSocketConnection",
    "encode_message_frames",
    "encode_close_payload",
    "is_valid_close_code",
    "OP_CONTINUATION",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_FRAGMENTS",
    "PART_OVERHEAD",
]

BytesLike = Union[bytes, bytearray, memoryview]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
DEFAULT_MAX_FRAGMENTS = 4096
#: Bytes charged per retained fragment on top of its length when bounding the memory
#: an incomplete message holds (a ``bytes`` header plus a list slot is ~40 bytes on
#: CPython; rounding up keeps many tiny fragments from being nearly free).
PART_OVERHEAD = 64
#: Longest close reason that fits a control frame (125 - 2 bytes of code).
MAX_CLOSE_REASON = 123


class Role(enum.Enum):
    """Which end of the connection this is; decides masking (RFC 6455 section 5.3)."""

    CLIENT = "client"
    SERVER = "server"


class ConnectionState(enum.Enum):
    """Where the connection is in the closing handshake (RFC 6455 section 7)."""

    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent and/or received
    CLOSED = "closed"  # the I/O layer should close TCP (after flushing data_to_send())


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """A close frame's content. ``code`` 1005 stands for an empty close payload."""

    code: int
    reason: str


def is_valid_close_code(code: int) -> bool:
    """True for codes allowed in a close frame on the wire (RFC 6455 section 7.4).

    1000-1003, 1007-1011, the widely deployed IANA additions 1012-1014, and the
    application/library ranges 3000-4999. 1004, 1005, 1006 and 1015 are reserved
    for local use and must never be sent.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode_close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: empty for ``code=None``, else code + UTF-8 reason.

    Raises ``ValueError`` for a code not valid on the wire, a reason without a code,
    or a reason longer than 123 UTF-8 bytes.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON:
        raise ValueError(f"close reason is {len(encoded)} bytes; at most {MAX_CLOSE_REASON} fit in a close frame")
    return code.to_bytes(2, "big") + encoded


def _truncate_utf8(text: str, limit: int) -> str:
    # Reasons we generate ourselves (failure messages) must still fit a close frame.
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def encode_message_frames(
    opcode: int,
    payload: BytesLike,
    *,
    fragment_size: int | None = None,
    rsv: int = 0,
    mask: bool = False,
) -> bytes:
    """Frame one data message without a connection; returns all its frames as one ``bytes``.

    For broadcast: a server encodes a message once (``mask=False``) and hands the same
    bytes to every recipient's :meth:`WebSocketConnection.send_raw_frames`. ``rsv``
    goes on the first frame only (pass the bits an extension's ``encode_message``
    returned, with the payload it returned). With ``fragment_size``, the payload is
    split into frames of at most that many bytes. ``mask=True`` (client side) uses a
    fresh random key per frame.
    """
    if opcode not in (OP_TEXT, OP_BINARY):
        raise ValueError(f"not a data opcode: {opcode:#x}")
    encode = _speedups.encode_frame
    length = len(payload)
    if fragment_size is None or length <= fragment_size:
        return encode(opcode, payload, True, rsv, os.urandom(4) if mask else None)
    if fragment_size < 1:
        raise ValueError("fragment_size must be at least 1")
    view = memoryview(payload).cast("B")
    frames: list[bytes] = []
    frame_opcode = opcode
    frame_rsv = rsv
    for start in range(0, length, fragment_size):
        end = start + fragment_size
        frames.append(encode(frame_opcode, view[start:end], end >= length, frame_rsv, os.urandom(4) if mask else None))
        frame_opcode = OP_CONTINUATION
        frame_rsv = 0
    return b"".join(frames)


_Frame = tuple[int, bool, int, Union[bytes, str]]

#: A pending frame's payload up to this size is unmasked in the copy that becomes the
#: message (one pass); a larger one is unmasked in place in windows of this size first.
_UNMASK_COPY_MAX = 64 * 1024


class _PendingFrame:
    """A data frame whose header was received and whose payload is still arriving."""

    __slots__ = ("opcode", "fin", "rsv", "length", "key", "utf8", "fragmented", "payload")

    def __init__(
        self,
        opcode: int,
        fin: bool,
        rsv: int,
        length: int,
        key: bytes | None,
        utf8: _speedups.Utf8Validator | None,
        fragmented: bool,
    ) -> None:
        self.opcode = opcode
        self.fin = fin
        self.rsv = rsv
        self.length = length
        self.key = key
        self.utf8 = utf8
        self.fragmented = fragmented  # part of a fragmented message (for the 1007 reason)
        # Grows as the bytes arrive (never pre-sized from the header); a text frame's is
        # unmasked as it comes (to be validated), any other's when it is complete.
        self.payload = bytearray()


class WebSocketConnection:
    """One WebSocket connection after the opening handshake, for either role.

    Parameters (all keyword-only except ``role``):

    ``max_message_size``
        Largest message accepted, in bytes after extensions decoded it; counted over
        all fragments; ``None`` disables the check. Exceeding it closes with 1009.
    ``max_fragments``
        Most frames one message may span (1009 when exceeded); ``None`` = unlimited.
    ``extensions``
        The negotiated extensions, in negotiation order (see ``extensions.py``).
    ``auto_pong``
        Answer every ping with a pong carrying the same payload (default True). The
        :class:`Ping` event is produced either way.
    ``stream_messages``
        Deliver data messages as :class:`MessageChunk` events, one per frame, instead
        of assembled :class:`TextMessage` / :class:`BinaryMessage` events.
    ``subprotocol``
        The negotiated subprotocol, kept for the application's convenience.
    ``plain_messages``
        Deliver every complete data message that arrived in one frame as a plain
        ``str`` (text) or ``bytes`` (binary) in the event list instead of a
        :class:`TextMessage` / :class:`BinaryMessage` (or a first-and-final
        :class:`MessageChunk` in streaming mode). Other events are unchanged. For I/O
        layers that queue messages as they are (no event object per message).

    Retained memory of an incomplete (fragmented) message is bounded by
    ``2 * max_message_size`` with :data:`PART_OVERHEAD` counted per retained
    fragment (1009 beyond that); the receive buffer holds at most one incomplete
    frame, whose payload is bounded by ``max_message_size`` (plus slack for
    compressed frames when an extension is negotiated).
    """

    # Slots: a server holds one of these per open connection (LIMITS/benchmark (d):
    # RSS per idle connection), and a __dict__ costs ~1 KiB more than slots.
    __slots__ = (
        "role", "max_message_size", "max_fragments", "extensions", "auto_pong", "stream_messages",
        "subprotocol", "_is_client", "_mask_required", "_allowed_rsv", "_max_frame", "_decode_text",
        "_budget_unlimited", "_state", "_buffer", "_discarding", "_outgoing", "_events", "_event_pos",
        "_message_opcode", "_message_rsv", "_message_size", "_message_fragments", "_message_parts",
        "_message_retained", "_message_decoders", "_utf8", "_text_decoder", "close_sent",
        "close_received", "failure", "plain_messages", "_pending", "hold_failure", "failure_pending",
        "_compressed_slack", "__weakref__",
    )

    def __init__(
        self,
        role: Role | str,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_fragments: int | None = DEFAULT_MAX_FRAGMENTS,
        extensions: Sequence[Extension] = (),
        auto_pong: bool = True,
        stream_messages: bool = False,
        subprotocol: str | None = None,
        plain_messages: bool = False,
    ) -> None:
        self.role = Role(role)
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size must be >= 0 or None")
        if max_fragments is not None and max_fragments < 1:
            raise ValueError("max_fragments must be >= 1 or None")
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.extensions: tuple[Extension, ...] = tuple(extensions)
        self.auto_pong = auto_pong
        self.stream_messages = stream_messages
        self.subprotocol = subprotocol
        self.plain_messages = plain_messages

        self._is_client = self.role is Role.CLIENT
        self._mask_required = not self._is_client  # servers receive masked frames
        allowed_rsv = 0
        for extension in self.extensions:
            allowed_rsv |= extension.rsv_mask
        self._allowed_rsv = allowed_rsv
        # A compressed frame may be slightly larger than its decoded content (stored
        # deflate blocks); the decoded size is what the limit is about, but a
        # compressed frame longer on the wire than the decoded bytes its message may
        # still take plus this slack is refused (1009) as soon as its header arrives.
        self._compressed_slack = 0 if max_message_size is None else (max_message_size >> 4) + 1024
        if max_message_size is None:
            self._max_frame = -1
        elif self.extensions:
            self._max_frame = max_message_size + self._compressed_slack
        else:
            self._max_frame = max_message_size
        # parse_frames may decode unfragmented, untransformed text frames itself;
        # with extensions, frames can exceed max_message_size on the wire, so text
        # length checks happen here on bytes instead.
        self._decode_text = not self.extensions
        self._budget_unlimited = sys.maxsize

        self._state = ConnectionState.OPEN
        # Created on demand: an idle connection holds no receive buffer, no message
        # parts and no UTF-8 state (benchmark (d): memory per idle connection).
        self._buffer: bytearray | None = None  # the tail of an incomplete frame's header
        # A data frame whose header arrived and whose payload is arriving: checked
        # against the message's limits at once, unmasked (and UTF-8-validated) as it
        # comes; the raw bytes are not kept.
        self._pending: _PendingFrame | None = None
        self._discarding = False  # after a close frame or a failure: ignore input
        self._outgoing: list[bytes] = []
        # Events, plus plain str/bytes messages in plain_messages mode.
        self._events: list[Any] = []
        self._event_pos = 0

        # The data message being received (None when between messages).
        self._message_opcode: int | None = None
        self._message_rsv = 0
        self._message_size = 0
        self._message_fragments = 0
        self._message_parts: list[bytes] | None = None
        self._message_retained = 0
        self._message_decoders: tuple[Extension, ...] = ()
        self._utf8: _speedups.Utf8Validator | None = None
        self._text_decoder: codecs.IncrementalDecoder | None = None

        #: The close frame this side sent (code, reason), once sent.
        self.close_sent: CloseInfo | None = None
        #: The close frame the peer sent, once received.
        self.close_received: CloseInfo | None = None
        #: The protocol error that failed the connection (the peer broke a rule), if any.
        self.failure: ProtocolError | None = None
        #: When True, a protocol violation found in received data does not queue the
        #: close frame at once: :attr:`failure` is set, :attr:`failure_pending`
        #: becomes True, further input is ignored, but the connection stays OPEN for
        #: sending, so that an I/O layer can deliver the messages that arrived before
        #: the violation and send the application's replies to them *before* the
        #: close frame. It then calls :meth:`complete_failure` (bounded by its close
        #: timeout). ``close()`` while a failure is pending completes the failure.
        self.hold_failure = False
        #: True between a held failure (see :attr:`hold_failure`) and :meth:`complete_failure`.
        self.failure_pending = False

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        """OPEN, CLOSING or CLOSED (see the module docstring for what each means to I/O)."""
        return self._state

    @property
    def closed(self) -> bool:
        """True in the CLOSED state, when the I/O layer flushes ``data_to_send()`` and closes TCP."""
        return self._state is ConnectionState.CLOSED

    def _closed_error(self) -> ConnectionClosedError:
        info = self.close_received or self.close_sent
        if info is None:
            return ConnectionClosedError(f"the WebSocket connection is {self._state.value}")
        return ConnectionClosedError(
            f"the WebSocket connection is {self._state.value} (code {info.code})", info.code, info.reason
        )

    # ------------------------------------------------------------------ events

    def events(self) -> list[Event]:
        """Every event produced since the last call, in order (the list is yours).

        (With ``plain_messages``, single-frame messages come as ``str``/``bytes``.)
        """
        events = self._events
        if self._event_pos:
            events = events[self._event_pos :]
        self._events = []
        self._event_pos = 0
        return events

    def receive_and_events(self, data: BytesLike) -> list[Any]:
        """``receive_data(data)`` followed by ``events()``, in one call (the hot path of an I/O layer)."""
        self.receive_data(data)
        events = self._events
        if not events:
            return []
        if self._event_pos:
            events = events[self._event_pos :]
        self._events = []
        self._event_pos = 0
        return events

    def next_event(self) -> Event | None:
        """The next pending event, or ``None`` when there is none (yet).

        (With ``plain_messages``, single-frame messages come as ``str``/``bytes``.)
        """
        pos = self._event_pos
        events = self._events
        if pos >= len(events):
            return None
        event: Event = events[pos]
        pos += 1
        if pos == len(events):
            events.clear()
            pos = 0
        self._event_pos = pos
        return event

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call, coalesced into one bytes."""
        outgoing = self._outgoing
        if not outgoing:
            return b""
        if len(outgoing) == 1:
            data = outgoing[0]
        else:
            data = b"".join(outgoing)
        outgoing.clear()
        return data

    def _mask_key(self) -> bytes | None:
        return os.urandom(4) if self._is_client else None

    def _require_open(self) -> None:
        if self._state is not ConnectionState.OPEN:
            raise self._closed_error()

    def send_text(self, text: str, *, fragment_size: int | None = None, compress: bool | None = None) -> None:
        """Queue a text message (``fragment_size``: split into frames of at most N bytes).

        ``compress`` is passed to every extension's ``encode_message``: ``None`` =
        the extension's policy, ``False`` = send as-is. Raises
        :class:`~volleyio.errors.ConnectionClosedError` unless the state is OPEN.
        """
        self._require_open()
        self._send_message(OP_TEXT, text.encode("utf-8"), fragment_size, compress)

    def send_binary(
        self, data: BytesLike, *, fragment_size: int | None = None, compress: bool | None = None
    ) -> None:
        """Queue a binary message; same options as :meth:`send_text`."""
        self._require_open()
        self._send_message(OP_BINARY, data, fragment_size, compress)

    def _send_message(
        self, opcode: int, payload: BytesLike, fragment_size: int | None, compress: bool | None
    ) -> None:
        rsv = 0
        if self.extensions:
            wire = bytes(payload)
            for extension in self.extensions:
                wire, bits = extension.encode_message(wire, opcode, compress)
                rsv |= bits
            payload = wire
        if fragment_size is None or len(payload) <= fragment_size:
            # The common case: one encode_frame call, no intermediate copies.
            self._outgoing.append(_speedups.encode_frame(opcode, payload, True, rsv, self._mask_key()))
        else:
            self._outgoing.append(
                encode_message_frames(opcode, payload, fragment_size=fragment_size, rsv=rsv, mask=self._is_client)
            )

    def send_message(self, message: str | BytesLike) -> bytes:
        """Queue one message (``str`` as text, bytes-like as binary) and return ``data_to_send()``.

        The one-call form of ``send_text``/``send_binary`` + ``data_to_send()`` for I/O
        layers (same rules: raises :class:`~volleyio.errors.ConnectionClosedError`
        unless OPEN; extensions apply with their default policy).
        """
        if self._state is not ConnectionState.OPEN:
            raise self._closed_error()
        if not (self.extensions or self._outgoing or self._is_client):
            return _speedups.encode_message(message)
        if isinstance(message, str):
            self._send_message(OP_TEXT, message.encode("utf-8"), None, None)
        else:
            self._send_message(OP_BINARY, message, None, None)
        return self.data_to_send()

    def send_raw_frames(self, data: bytes) -> None:
        """Queue already-encoded frames (from :func:`encode_message_frames`) as they are.

        The caller guarantees they are complete, well-formed data frames for this
        role (unmasked server frames, masked client frames) and whole messages.
        Raises :class:`~volleyio.errors.ConnectionClosedError` unless OPEN.
        """
        self._require_open()
        if data:
            self._outgoing.append(data)

    def send_ping(self, payload: BytesLike = b"") -> None:
        """Queue a ping (payload at most 125 bytes)."""
        self._send_control(OP_PING, payload)

    def send_pong(self, payload: BytesLike = b"") -> None:
        """Queue an unsolicited pong, e.g. as a unidirectional heartbeat (at most 125 bytes)."""
        self._send_control(OP_PONG, payload)

    def _send_control(self, opcode: int, payload: BytesLike) -> None:
        self._require_open()
        if len(payload) > 125:
            raise ValueError("control frame payloads are at most 125 bytes")
        self._outgoing.append(_speedups.encode_frame(opcode, payload, True, 0, self._mask_key()))

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame and enter CLOSING.

        ``code=None`` sends an empty close payload (the peer sees 1005). Does
        nothing when a close frame was already sent or the connection is CLOSED.
        Raises ``ValueError`` for an invalid code or a reason over 123 UTF-8 bytes.
        """
        payload = encode_close_payload(code, reason)
        if self.failure_pending:
            self._complete_failure()  # the failure's code is the one the peer must see
            return
        if self._state is not ConnectionState.OPEN:
            return
        self._outgoing.append(_speedups.encode_frame(OP_CLOSE, payload, True, 0, self._mask_key()))
        self.close_sent = CloseInfo(1005 if code is None else code, reason)
        self._state = ConnectionState.CLOSING

    # ------------------------------------------------------------------ input

    def receive_data(self, data: BytesLike) -> None:
        """Feed bytes read from the transport; ``b""`` means the peer closed it (EOF).

        Never raises for anything the peer sent; see :attr:`failure`.
        """
        if self._state is ConnectionState.CLOSED:
            return
        if not data:
            self._receive_eof()
            return
        if self._discarding:
            return
        completed = None
        if self._pending is not None:
            step = self._continue_pending(data)
            if step is None:
                return  # still arriving, or the connection failed
            completed, data = step
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            source: BytesLike = buffer
        else:
            source = data
        frames, consumed, error = _speedups.parse_frames(
            source, self._mask_required, self._max_frame, self._allowed_rsv, self._decode_text
        )
        if completed is not None:
            frames.insert(0, completed)
        if buffer is not None:
            del buffer[:consumed]
            if not buffer:
                buffer = self._buffer = None

        events = self._events
        for frame in frames:
            opcode, fin, rsv, payload = frame
            if type(payload) is str:
                # An unfragmented, untransformed text frame that parse_frames already
                # validated and decoded: the hot path.
                if self._message_opcode is not None:
                    self._fail(1002, "new data frame while a fragmented message is in progress")
                    return
                if self.plain_messages:
                    events.append(payload)
                elif self.stream_messages:
                    events.append(MessageChunk(payload, True, True, True))
                else:
                    events.append(TextMessage(payload))
                continue
            if opcode == OP_BINARY and fin and not rsv and self._message_opcode is None and self._decode_text:
                # An unfragmented binary frame, no extensions negotiated: parse_frames
                # already bounded its size by max_message_size (the other hot path).
                if self.plain_messages:
                    events.append(payload)
                elif self.stream_messages:
                    events.append(MessageChunk(payload, False, True, True))
                else:
                    events.append(BinaryMessage(payload))  # type: ignore[arg-type]  # bytes here
                continue
            if TYPE_CHECKING:
                # Every other payload is bytes. Narrowed for mypy only: isinstance() at
                # run time costs ~20 ns more per binary frame than the check above.
                assert isinstance(payload, bytes)
            try:
                if opcode <= OP_BINARY:
                    self._receive_data_frame(opcode, fin, rsv, payload)
                else:
                    self._receive_control_frame(opcode, payload)
            except ProtocolError as exc:
                self._fail(exc.code, str(exc))
                return
            except Exception as exc:  # an extension broke: our fault, not the peer's
                self._fail(1011, f"internal error: {type(exc).__name__}")
                return
            if self._discarding:
                # A close frame arrived; anything after it is ignored (section 1.4).
                return
        if error is not None:
            self._fail(error[0], error[1])
        elif buffer is not None:
            if self._start_pending(buffer):
                self._buffer = None
        elif consumed < len(data):
            # The start of a frame: a data frame whose header is complete becomes the
            # pending frame at once; anything else waits in the buffer.
            tail = memoryview(data)[consumed:]
            if not self._start_pending(tail):
                self._buffer = bytearray(tail)

    def _start_pending(self, buffer: BytesLike) -> bool:
        """The buffer holds the start of a frame: once its header is complete, check a
        data frame against its message's limits and collect its payload as it comes.

        parse_frames has already applied every rule of the header (it stops at an
        incomplete frame only after its checks pass). Here: the message's remaining size
        budget (1009 before the payload is read), the fragment count, the fragmentation
        rules (1002), and the text frame's UTF-8 as its payload arrives (1007).
        True when the bytes were taken (or the connection failed), False when they are
        to wait in the buffer (an incomplete header, a control frame).
        """
        have = len(buffer)
        if have < 2:
            return False
        b0 = buffer[0]
        opcode = b0 & 0x0F
        if opcode > OP_BINARY:
            return False  # a control frame: at most 125 bytes, parsed when complete
        b1 = buffer[1]
        length = b1 & 0x7F
        extended = 2 if length == 126 else 8 if length == 127 else 0
        header = 2 + extended + (4 if b1 & 0x80 else 0)
        if have < header:
            return False
        if extended:
            length = int.from_bytes(buffer[2 : 2 + extended], "big")
        fin = bool(b0 & 0x80)
        rsv = (b0 >> 4) & 0x7
        in_message = self._message_opcode is not None
        if opcode == OP_CONTINUATION:
            if not in_message:
                self._fail(1002, "continuation frame without a message in progress")
                return True
            compressed = bool(self._message_decoders)
            used = self._message_size
            text = self._message_opcode == OP_TEXT and not compressed
            fragments = self._message_fragments
        else:
            if in_message:
                self._fail(1002, "new data frame while a fragmented message is in progress")
                return True
            compressed = bool(rsv & self._allowed_rsv)
            used = 0
            text = opcode == OP_TEXT and not compressed
            fragments = 0
        if self.max_fragments is not None and fragments >= self.max_fragments:
            self._fail(1009, f"message spans more than {self.max_fragments} frames")
            return True
        max_size = self.max_message_size
        if max_size is not None:
            budget = max_size - used
            if compressed:
                budget += self._compressed_slack
            if length > budget:
                self._fail(1009, f"message exceeds {max_size} bytes")
                return True
        validator: _speedups.Utf8Validator | None = None
        if text:
            if opcode == OP_CONTINUATION and self._utf8 is not None:
                # Continue from the message's state (a character may straddle frames)
                # without advancing it: the whole frame is fed to it when complete.
                validator = copy.copy(self._utf8)
            else:
                validator = _speedups.Utf8Validator()
        key = bytes(buffer[header - 4 : header]) if b1 & 0x80 else None
        pending = _PendingFrame(opcode, fin, rsv, length, key, validator, not (opcode == OP_TEXT and fin))
        self._pending = pending
        if have > header:
            # Incomplete (parse_frames would have taken a complete frame): stays pending.
            self._continue_pending(memoryview(buffer)[header:])
        return True

    def _continue_pending(self, data: BytesLike) -> tuple[_Frame, BytesLike] | None:
        """Add received bytes to the pending frame. None while it is incomplete (or when
        the connection failed); once complete, the frame and the bytes after it."""
        pending = self._pending
        assert pending is not None
        payload = pending.payload
        need = pending.length - len(payload)
        view = memoryview(data)
        piece: BytesLike = view[:need] if len(view) > need else view
        key = pending.key
        validator = pending.utf8
        if piece:
            start = len(payload)
            payload += piece  # copied as received
            if validator is not None:
                # Text: unmasked in place as it arrives, and validated.
                with memoryview(payload) as whole, whole[start:] as added:
                    if key is not None:
                        _speedups.mask_inplace(added, key, start)
                    bad = validator.feed(added) != -1
                if bad:
                    # Fail fast: the rest of the frame is never waited for.
                    # The reason a whole read would give: "frame" where parse_frames decodes
                    # the frame itself (unfragmented, untransformed), else "message".
                    decoded_whole = (
                        self._decode_text and pending.fin and not pending.rsv and not pending.fragmented
                    )
                    self._fail(1007, "invalid UTF-8 in text frame" if decoded_whole else "invalid UTF-8 in text message")
                    return None
        if len(payload) < pending.length:
            return None
        self._pending = None
        opcode, fin, rsv = pending.opcode, pending.fin, pending.rsv
        frame: _Frame
        if self._decode_text and opcode == OP_TEXT and fin and not rsv:
            # What parse_frames does for such a frame (decoded straight from the buffer).
            try:
                frame = (opcode, fin, rsv, payload.decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in text frame")
                return None
        elif key is None or validator is not None:
            frame = (opcode, fin, rsv, bytes(payload))
        elif len(payload) <= _UNMASK_COPY_MAX:
            frame = (opcode, fin, rsv, _speedups.mask(payload, key))  # unmasked as it is copied
        else:
            # Unmasked in place in windows (the pure twin's mask needs several times its
            # input in temporaries), then copied once: about twice the frame at the peak.
            with memoryview(payload) as whole:
                for offset in range(0, len(payload), _UNMASK_COPY_MAX):
                    with whole[offset : offset + _UNMASK_COPY_MAX] as window:
                        _speedups.mask_inplace(window, key, offset)
            frame = (opcode, fin, rsv, bytes(payload))
        del payload, pending.payload
        return frame, view[need:]

    def receive_eof(self) -> None:
        """The peer closed its side of the transport (same as ``receive_data(b"")``)."""
        if self._state is not ConnectionState.CLOSED:
            self._receive_eof()

    def _receive_eof(self) -> None:
        self._discarding = True
        self._buffer = None
        self._pending = None
        self.failure_pending = False
        self._reset_message()
        self._enter_closed()

    def _enter_closed(self) -> None:
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        received = self.close_received
        if received is None:
            self._events.append(ConnectionClosed(1006, "", False))
        else:
            self._events.append(ConnectionClosed(received.code, received.reason, self.close_sent is not None))

    def _fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 section 7.1.7)."""
        if not is_valid_close_code(code):
            code = 1011  # an extension reported a code that may not go on the wire
        self.failure = ProtocolError(reason, code)
        self._discarding = True
        self._buffer = None
        self._pending = None
        self._reset_message()
        if self.hold_failure and self._state is ConnectionState.OPEN:
            self.failure_pending = True  # the close frame waits for complete_failure()
            return
        self._complete_failure()

    def complete_failure(self) -> None:
        """Queue the close frame of a held failure (see :attr:`hold_failure`) and go on
        as a failed connection: CLOSING, and CLOSED at once on the server side. Does
        nothing when no failure is pending."""
        if self.failure_pending:
            self._complete_failure()

    def _complete_failure(self) -> None:
        self.failure_pending = False
        failure = self.failure
        assert failure is not None
        code = failure.code
        reason = str(failure)
        if self._state is ConnectionState.OPEN:
            payload = encode_close_payload(code, _truncate_utf8(reason, MAX_CLOSE_REASON))
            self._outgoing.append(_speedups.encode_frame(OP_CLOSE, payload, True, 0, self._mask_key()))
            self.close_sent = CloseInfo(code, _truncate_utf8(reason, MAX_CLOSE_REASON))
            self._state = ConnectionState.CLOSING
        # The server closes TCP right away; a client waits for the server's EOF.
        if not self._is_client:
            self._enter_closed()

    def _reset_message(self) -> None:
        self._message_opcode = None
        self._message_parts = None
        self._message_retained = 0
        self._message_decoders = ()

    def _receive_data_frame(self, opcode: int, fin: bool, rsv: int, payload: bytes) -> None:
        first = opcode != OP_CONTINUATION
        if first:
            if self._message_opcode is not None:
                raise ProtocolError("new data frame while a fragmented message is in progress", 1002)
            self._message_opcode = opcode
            self._message_rsv = rsv
            self._message_size = 0
            self._message_fragments = 0
            if rsv:
                # Decode in reverse negotiation order; only the extensions whose
                # bits the first frame carries transformed this message.
                self._message_decoders = tuple(ext for ext in reversed(self.extensions) if ext.rsv_mask & rsv)
            else:
                self._message_decoders = ()
            if opcode == OP_TEXT and not (fin and not self.stream_messages):
                if self._utf8 is None or self._text_decoder is None:
                    self._text_state()
                else:
                    self._utf8.reset()
                    self._text_decoder.reset()
        elif self._message_opcode is None:
            raise ProtocolError("continuation frame without a message in progress", 1002)
        else:
            opcode = self._message_opcode

        self._message_fragments += 1
        if self.max_fragments is not None and self._message_fragments > self.max_fragments:
            raise ProtocolError(f"message spans more than {self.max_fragments} frames", 1009)

        max_size = self.max_message_size
        data = payload
        if self._message_decoders:
            budget = self._budget_unlimited if max_size is None else max_size - self._message_size
            message_rsv = self._message_rsv
            for extension in self._message_decoders:
                data = extension.decode_fragment(data, first, message_rsv, fin, budget)
        size = self._message_size + len(data)
        if max_size is not None and size > max_size:
            raise ProtocolError(f"message exceeds {max_size} bytes", 1009)
        self._message_size = size

        is_text = opcode == OP_TEXT
        if self.stream_messages:
            chunk: str | bytes = data
            if is_text:
                utf8, decoder = self._text_state()
                if utf8.feed(data) != -1:
                    raise ProtocolError("invalid UTF-8 in text message", 1007)
                if fin and not utf8.complete:
                    raise ProtocolError("text message ends inside a UTF-8 sequence", 1007)
                chunk = decoder.decode(data, fin)
            if first and fin and self.plain_messages:
                self._events.append(chunk)
            else:
                self._events.append(MessageChunk(chunk, is_text, first, fin))
            if fin:
                self._reset_message()
            return

        if first and fin:
            # Unfragmented (text here means transformed by an extension, or
            # decode_text was off).
            self._reset_message()
            if is_text:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("invalid UTF-8 in text message", 1007) from None
                self._events.append(text if self.plain_messages else TextMessage(text))
            else:
                self._events.append(data if self.plain_messages else BinaryMessage(data))
            return

        if is_text and self._text_state()[0].feed(data) != -1:
            # Fail fast: the rest of the message is never waited for.
            raise ProtocolError("invalid UTF-8 in text message", 1007)
        if data:
            if not fin:
                # The final part is joined at once; only the parts waiting for more
                # frames are retained memory.
                self._message_retained += len(data) + PART_OVERHEAD
                if max_size is not None and self._message_retained > 2 * max_size:
                    raise ProtocolError("incomplete message retains too much memory", 1009)
            if self._message_parts is None:
                self._message_parts = [data]
            else:
                self._message_parts.append(data)
        if not fin:
            return
        if is_text and not self._text_state()[0].complete:
            raise ProtocolError("text message ends inside a UTF-8 sequence", 1007)
        parts = self._message_parts
        if parts is None:
            whole = b""
        else:
            whole = parts[0] if len(parts) == 1 else b"".join(parts)
        self._reset_message()
        if is_text:
            self._events.append(TextMessage(whole.decode("utf-8")))
        else:
            self._events.append(BinaryMessage(whole))

    def _text_state(self) -> tuple[_speedups.Utf8Validator, codecs.IncrementalDecoder]:
        # Created with the first fragmented/streamed text message (reset per message
        # in _receive_data_frame); idle connections never hold one.
        if self._utf8 is None or self._text_decoder is None:
            self._utf8 = _speedups.Utf8Validator()
            self._text_decoder = getincrementaldecoder("utf-8")()
        return self._utf8, self._text_decoder

    def _receive_control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._events.append(Ping(payload))
            if self.auto_pong and self._state is ConnectionState.OPEN:
                self._outgoing.append(_speedups.encode_frame(OP_PONG, payload, True, 0, self._mask_key()))
        elif opcode == OP_PONG:
            self._events.append(Pong(payload))
        else:
            self._receive_close(payload)

    def _receive_close(self, payload: bytes) -> None:
        length = len(payload)
        if length == 0:
            code, reason = 1005, ""
        elif length == 1:
            raise ProtocolError("close frame payload of 1 byte", 1002)
        else:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise ProtocolError(f"invalid close code {code}", 1002)
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("invalid UTF-8 in close reason", 1007) from None
        # A message interrupted by the close is abandoned (control frames may be
        # interleaved with fragments, section 5.4).
        self._reset_message()
        self.close_received = CloseInfo(code, reason)
        self._events.append(CloseReceived(code, reason))
        self._discarding = True
        self._buffer = None
        self._pending = None
        if self._state is ConnectionState.OPEN:
            # Echo the code (section 5.5.1); an empty close is answered with an empty one.
            self._outgoing.append(_speedups.encode_frame(OP_CLOSE, payload[:2], True, 0, self._mask_key()))
            self.close_sent = CloseInfo(code, "")
            self._state = ConnectionState.CLOSING
        if not self._is_client:
            self._enter_closed()
