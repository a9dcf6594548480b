"""A WebSocket connection on trio: the hot path of ARCHITECTURE.md.

* The protocol is the sans-I/O core's (``volleyio.websocket.WebSocketConnection``):
  each read is handed to it with one ``receive_data`` call (all complete frames of the
  read parsed by one ``_speedups.parse_frames`` call), its events are taken in one
  batch and ``data_to_send()`` is written once per batch.
* Plain TCP reads go straight to the non-blocking socket: ``recv_into`` a shared
  256 KiB scratch buffer first, ``wait_readable`` only when it would block. The
  scratch buffer is shared by every connection of the thread (trio is
  single-threaded and no ``await`` happens between the read and the parse), so an
  idle connection holds no read buffer at all; the core keeps only the tail of an
  incomplete frame.
* The task that calls ``receive()`` on an empty queue reads the socket itself (one
  scheduler hop per read, like a bare trio echo); the per-connection reader task
  then *ends* (an idle connection holds one task, not two) and is started again
  when somebody needs reading while nobody receives (``ping()``/``close()`` waiting
  for an answer, or the keepalive tick) -- see ``_read_raw`` / ``_wake_reader``.
* The core hands single-frame messages over as plain ``str``/``bytes``
  (``plain_messages``, ``receive_and_events``, ``send_message``): no event object
  per message.
* Write coalescing (server, plain TCP): a ``send()`` made while more received
  messages are queued appends to the outbound buffer; the batch goes out in one
  ``send`` syscall with the send that empties the queue, before ``receive()``
  blocks, above the write limit, or -- if the application waits elsewhere -- from
  the server's ``BatchFlusher`` as soon as the task yields.
* Writes try a direct non-blocking ``send`` first; what the kernel does not take is
  coalesced into one outbound buffer that a single flusher drains. ``send`` awaits
  only while that buffer is above its high-water mark (64 KiB, resume at 16 KiB).
* The inbound queue is bounded (16 messages, resume at 4): above it the reader stops
  reading and TCP pushes back on the peer.
* TLS goes through ``trio.SSLStream`` (``receive_some`` / ``send_all``).

Async methods here are checkpoints in the trio sense when they block; when they
complete without blocking they check for cancellation and yield to the scheduler
every few calls only (a full yield per message is a measurable share of the CPU).
"""

from __future__ import annotations

import logging
import os
import socket as _socket
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Union

import trio

from .. import _speedups
from .. import websocket as _ws
from ..metrics import PROCESS as _PROCESS
from ..websocket.events import CloseReceived as _CloseReceived
from ..websocket.events import ConnectionClosed as _WSClosed
from ..websocket.events import MessageChunk as _MessageChunk
from ..websocket.events import Ping as _Ping
from ..websocket.events import Pong as _Pong
from ..errors import ConnectionClosedError as _CoreClosedError
from ..websocket.connection import encode_close_payload
from ._errors import ConnectionClosed, closed_exception
from ._waiting import ReceiverWait

logger = logging.getLogger("volleyio.trio")

Data = Union[str, bytes]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_SCRATCH_SIZE = 256 * 1024
_scratch = bytearray(_SCRATCH_SIZE)
_scratch_view = memoryview(_scratch)

_YIELD_EVERY = 16

# Hot-path aliases (one global lookup instead of three attribute lookups per message).
_checkpoint = trio.lowlevel.checkpoint
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled


@dataclass
class Limits:
    """Per-connection limits (LIMITS.md defaults)."""

    max_message_size: int = 1_048_576
    max_fragments: int = 4096
    max_queue: int = 16
    queue_low: int = 4
    write_high: int = 64 * 1024
    write_low: int = 16 * 1024
    close_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


@dataclass
class Statistics:
    """A snapshot of one connection's counters (see :meth:`WebSocketConnection.statistics`)."""

    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    reads: int
    writes: int
    pings_sent: int
    pongs_received: int
    inbound_queue: int
    outbound_buffered: int
    state: str
    close_code: int | None
    close_reason: str | None


class _Fragment:
    """A piece of a fragmented data message waiting in the inbound queue."""

    __slots__ = ("data", "first", "final", "is_text")

    def __init__(self, data: Data, first: bool, final: bool, is_text: bool) -> None:
        self.data = data
        self.first = first
        self.final = final
        self.is_text = is_text


class _Closed:
    __slots__ = ()


_CLOSED_SENTINEL = _Closed()


class _Failing:
    __slots__ = ()


#: In the inbound queue after the messages that arrived before a protocol violation:
#: reaching it sends the close frame (the replies to those messages went first).
_FAILURE_MARK = _Failing()


class BatchFlusher:
    """One task that writes the coalesced replies of connections whose task yielded.

    ``send()`` may append a reply to the outgoing buffer instead of writing it when
    more received messages are queued (the next receive()/send() writes them all
    with one syscall). If the application instead goes off and waits elsewhere, this
    task -- woken by the first deferral of a scheduler round -- flushes them as soon
    as the deferring task yields, so data is never held back longer than that.
    """

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._pending: list[WebSocketConnection] = []
        self._task: Any = None

    def add(self, ws: WebSocketConnection) -> None:
        self._pending.append(ws)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        while True:
            if self._pending:
                await trio.lowlevel.checkpoint()
            else:
                self._task = trio.lowlevel.current_task()

                def abort(_: Any) -> trio.lowlevel.Abort:
                    self._task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
                # One more scheduler round: a task that merely yielded in the middle of
                # its batch flushes its own replies (in one write) at the batch's end.
                await trio.lowlevel.checkpoint()
            pending, self._pending = self._pending, []
            for ws in pending:
                if ws._deferred:
                    ws._flush_nowait()


class MessageHandler:
    """The callback-style alternative to an ``async def handler(ws)`` for :func:`serve`.

    Subclass it and pass an instance (or a ``{path: handler}`` mapping holding some) to
    ``serve()``. Its methods run synchronously in the connection's own task, the one
    that reads the socket: there is no per-message coroutine, wake-up or queue, which is
    the cheapest way to handle many small messages (the shape of picows' listeners).
    They must not block; start tasks for slow work.

    * ``on_open(ws)`` -- once, before the first message is read.
    * ``on_message(ws, message)`` -- each message, ``str`` (text) or ``bytes`` (binary),
      whole (fragments are assembled; ``max_message_size`` still applies).
    * ``on_close(ws)`` -- once, after the connection closed (``ws.close_code`` and
      ``ws.close_reason`` tell how).

    Reply with :meth:`WebSocketConnection.send_nowait`: replies made while a read is
    being handled leave together, in one write, when the read's messages are done.
    While the peer does not take what was written, the connection stops reading it (TCP
    backpressure), so an echo-style handler holds at most one read's worth of replies.
    ``ws.close_nowait()`` closes from a callback; ``await ws.send()``, ``ws.ping()`` and
    ``ws.close()`` work from other tasks. ``receive()`` is not available in this mode.
    An exception in a callback is logged and closes that connection with 1011.
    """

    def on_open(self, ws: WebSocketConnection) -> None:
        """The connection is open (nothing has been read yet)."""

    def on_message(self, ws: WebSocketConnection, message: Data) -> None:
        """One whole message from the peer."""

    def on_close(self, ws: WebSocketConnection) -> None:
        """The connection is closed; nothing more will be delivered."""


#: LIMITS.md: bytes a connection may hold for a peer through send_nowait()/broadcast()
#: before it is closed 1008 "slow consumer".
FANOUT_LIMIT = 1_048_576


def _handler_mode_error() -> RuntimeError:
    return RuntimeError("this connection is served by a MessageHandler: messages go to its on_message()")


def _raw_socket(stream: trio.abc.Stream) -> _socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream`` (None for TLS and others)."""
    if not isinstance(stream, trio.SocketStream):
        return None
    raw = getattr(stream.socket, "_sock", None)
    return raw if isinstance(raw, _socket.socket) else None


class WebSocketConnection(ReceiverWait):
    """One open WebSocket connection (server or client side).

    ``send``/``receive``/``ping``/``close`` are safe to call from several tasks.
    Use ``async for message in ws`` to receive until a normal close.
    """

    __slots__ = (
        "stream", "client", "limits", "subprotocol", "request", "response_headers",
        "_proto", "_raw", "_initial",
        "_queue", "_recv_task", "_recv_lot", "_resume_lot_", "_out", "_flushing", "_drain_lot_", "_write_lock_",
        "_ops", "_nursery", "_pings", "_ping_scopes", "_last_pong_or_data", "state", "close_code",
        "close_reason", "_close_sent", "_close_received", "_closed_event_", "_eof", "_transport_closed",
        "_stream_closed", "_ka_reads", "_ka_ping_at", "_ka_last", "_n_msg_in", "_n_msg_out", "_n_bytes_in",
        "_n_bytes_out", "_n_reads", "_n_writes", "_n_pings", "_n_pongs", "_reader_active", "_reader_scope",
        "_reader_lot_", "_inline_reader", "_receiver_owns", "_batch", "_deferred",
        "_handler", "_parts", "_backlog", "_dispatching", "_closing_scope", "_read_hot", "_encode_plain",
        "_failure_scope", "__weakref__",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client: bool,
        limits: Limits | None = None,
        subprotocol: str | None = None,
        extensions: Sequence[Any] = (),
        request: Any = None,
        response_headers: list[tuple[str, str]] | None = None,
        initial_data: bytes = b"",
        proto: _ws.WebSocketConnection | None = None,
    ) -> None:
        self.stream = stream
        self.client = client
        self.limits = limits or Limits()
        self.subprotocol = subprotocol
        #: The HTTP request of the opening handshake (server side), or None.
        self.request = request
        #: The response headers of the opening handshake (client side).
        self.response_headers = response_headers or []
        # The sans-I/O core does the protocol: frames, limits, UTF-8, close codes,
        # extensions. Messages are streamed (one MessageChunk per frame) so that
        # receive_stream() works; a single-frame message is queued as-is.
        if proto is None:
            proto = _ws.WebSocketConnection(
                _ws.Role.CLIENT if client else _ws.Role.SERVER,
                max_message_size=self.limits.max_message_size,
                max_fragments=self.limits.max_fragments,
                extensions=tuple(extensions),
                stream_messages=True,
                subprotocol=subprotocol,
                plain_messages=True,
            )
        else:
            proto.stream_messages = True  # receive_stream() needs per-frame chunks
            self.subprotocol = proto.subprotocol
        # Single-frame messages come out of the core as plain str/bytes (queued as-is).
        proto.plain_messages = True
        # A peer's protocol violation: the messages before it are delivered and the
        # application's replies to them go out before the close frame (see _failure_found).
        proto.hold_failure = True
        self._proto = proto
        self._raw = _raw_socket(stream)
        # Inbound state.
        self._initial: bytes = initial_data
        self._queue: list[Any] = []  # bounded (max_queue + one read); a list is smaller than a deque
        # The task parked in receive() (the common single-receiver case needs no lot).
        self._recv_task: Any = None
        self._recv_lot: trio.lowlevel.ParkingLot | None = None
        self._resume_lot_: trio.lowlevel.ParkingLot | None = None
        # Outbound state.
        self._out = bytearray()
        self._flushing = False
        self._drain_lot_: trio.lowlevel.ParkingLot | None = None
        self._write_lock_: trio.Lock | None = None  # for stream (TLS) transports
        self._ops = 0
        #: A nursery the connection may spawn helper tasks into (set by server/client).
        self._nursery: trio.Nursery | None = None
        # Ping bookkeeping: payload -> event.
        self._pings: dict[bytes, trio.Event] | None = None
        self._ping_scopes: set[trio.CancelScope] | None = None
        self._last_pong_or_data = trio.current_time()
        # Close state.
        self.state = "OPEN"
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._close_sent = False
        self._close_received = False
        self._closed_event_: trio.Event | None = None
        self._eof = False
        self._transport_closed = False
        self._stream_closed = False
        #: True while a task runs :meth:`run_reader`.
        self._reader_active = False
        # Inline reading by receive() (plain TCP): see _read_raw.
        self._reader_scope: trio.CancelScope | None = None
        self._reader_lot_: trio.lowlevel.ParkingLot | None = None
        self._inline_reader = False
        self._receiver_owns = False
        # Write coalescing (server side, plain TCP): see send() and BatchFlusher.
        self._batch: BatchFlusher | None = None
        self._deferred = False
        self._read_hot = False  # the last read found data without waiting (see _read_step)
        # Callback mode (a MessageHandler): messages go to on_message from the reader.
        self._handler: MessageHandler | None = None
        self._parts: list[Any] | None = None  # a fragmented message being assembled for it
        # Messages read but held back while the replies already made exceed write_high.
        self._backlog: list[Data] | None = None
        self._dispatching = False  # on_message runs: send_nowait() appends to the batch
        self._closing_scope: trio.CancelScope | None = None  # bounds the close in callback mode
        self._failure_scope: trio.CancelScope | None = None  # bounds a held failure (_failure_deadline)
        # send_nowait()'s framing when the core would add nothing (server, no extension).
        self._encode_plain = None if client or proto.extensions else _speedups.encode_message
        # Keepalive bookkeeping (see _keepalive.Keepalive).
        self._ka_reads = -1
        self._ka_ping_at: float | None = None
        self._ka_last = 0.0
        # Counters.
        self._n_msg_in = 0
        self._n_msg_out = 0
        self._n_bytes_in = 0
        self._n_bytes_out = 0
        self._n_reads = 0
        self._n_writes = 0
        self._n_pings = 0
        self._n_pongs = 0

    # ------------------------------------------------------------------ public API

    @property
    def extensions(self) -> tuple[Any, ...]:
        """The negotiated extensions (e.g. permessage-deflate), in negotiation order."""
        return self._proto.extensions

    @property
    def closed(self) -> bool:
        return self.state == "CLOSED"

    @property
    def remote_address(self) -> Any:
        try:
            sock = self._raw if self._raw is not None else None
            return sock.getpeername() if sock is not None else None
        except OSError:
            return None

    async def send(self, message: Data | bytearray | memoryview, *, compress: bool | None = None) -> None:
        """Send one message: ``str`` as text, bytes-like as binary."""
        if self._close_sent or self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        proto = self._proto
        if compress is None:
            encode = self._encode_plain
            data = encode(message) if encode is not None else proto.send_message(message)
        else:
            if isinstance(message, str):
                proto.send_text(message, compress=compress)
            else:
                proto.send_binary(message, compress=compress)
            data = proto.data_to_send()
        self._n_msg_out += 1
        if (
            self._batch is not None
            and self._queue
            and not self._flushing
            and not self._transport_closed
            and len(self._out) + len(data) <= self.limits.write_high
        ):
            # More received messages are waiting for the application: this reply is
            # coalesced with the next ones into one write. It is flushed when the queue
            # runs dry (the last send, or receive() before it blocks), above the write
            # limit, or -- if the application stops here -- by the batch flusher once
            # this task yields to the scheduler.
            self._out += data
            if not self._deferred:
                self._deferred = True
                self._batch.add(self)
            # A cancellation point; the scheduling point comes with the receive()
            # that follows (it yields every few messages and when it blocks).
            await _checkpoint_if_cancelled()
            return
        await self._write(data)

    async def send_frame_bytes(self, frame: bytes) -> None:
        """Write one already-encoded, unmasked frame (server side; used by broadcast)."""
        if self._close_sent or self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        self._n_msg_out += 1
        await self._write(frame)

    def send_nowait(self, message: Data | bytearray | memoryview, *, limit: int = FANOUT_LIMIT) -> bool:
        """Queue one message without waiting: ``str`` as text, bytes-like as binary.

        Returns False when the connection is closing or closed (nothing is queued). Inside
        a :class:`MessageHandler` callback of this connection the message joins the
        read's batch, whatever its size: the connection's own replies are under
        ``write_high`` backpressure (later messages wait, nothing more is read), not this
        limit. Otherwise (fan-out) it is written at once when the kernel takes it; bytes
        the peer has not taken are buffered up to ``limit``, and the message that would
        go beyond closes the connection with 1008 "slow consumer" (and False is returned).
        """
        if self._close_sent or self.state != "OPEN":
            return False
        encode = self._encode_plain
        if encode is not None:
            # No extension, server side: the frame needs nothing of the core. (When the
            # peer's close came in this very read, the reply still precedes our close
            # answer, which the reader appends after the read's messages: allowed.)
            data = encode(message)
        else:
            try:
                data = self._proto.send_message(message)
            except _CoreClosedError:
                return False  # the peer's close arrived in this read: the core has answered it
        if self._dispatching:
            # A reply of this connection's own callback: it joins the read's batch,
            # under write_high backpressure (the connection stops reading and holds
            # later messages back while replies are above it), never the fan-out limit.
            self._out += data
            self._n_msg_out += 1
            return True
        if self.write_frame_nowait(data, limit):
            return True
        self._slow_consumer()
        return False

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting (e.g. from a callback).

        The close frame follows what is already queued; the connection's task waits for
        the peer's answer for at most ``close_timeout``, then drops TCP. ``ValueError``
        for an invalid code or a reason over 123 UTF-8 bytes. Nothing happens if a close
        was already sent.
        """
        if self._close_sent or self.state == "CLOSED":
            return
        if self._proto.failure_pending:
            encode_close_payload(code if code != 1005 else None, reason)  # same ValueError rules
            self._complete_failure(flush=not self._dispatching)  # the peer broke the protocol: its code is sent
            return
        self._proto.close(None if code == 1005 else code, reason)
        self._close_sent = True
        self.state = "CLOSING"
        frame = self._proto.data_to_send()
        if self._dispatching:
            self._out += frame
        else:
            self._queue_control(frame)
        scope = self._closing_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, trio.current_time() + self.limits.close_timeout)

    async def receive(self) -> Data:
        """The next message (``str`` or ``bytes``); raises ConnectionClosed once closed."""
        queue = self._queue
        while True:
            if queue:
                item = queue[0]
                if item.__class__ is str or item.__class__ is bytes:
                    del queue[0]
                    if self._resume_lot_ is not None and len(queue) == self.limits.queue_low:
                        self._resume_lot_.unpark_all()
                    await self._yield_point()
                    return item
                if item is _FAILURE_MARK:
                    del queue[0]
                    self._complete_failure(flush=True)
                    continue
                if item is _CLOSED_SENTINEL:
                    await trio.lowlevel.checkpoint()
                    raise self._closed_exc()
                return await self._assemble()
            if self._deferred:
                self._flush_nowait()  # replies coalesced during the batch go out before we wait
            if self._handler is not None:
                raise _handler_mode_error()
            # _await_more(), inlined: one coroutine frame less while idle.
            if self._can_read_inline():
                await self._read_inline()
            else:
                await self._wait_woken()

    async def receive_many(self, max_messages: int = 64) -> list[Data]:
        """The whole messages already received, at least one (waiting for it if needed)
        and at most ``max_messages``.

        For I/O layers that handle a read's worth of messages in one go (one call, one
        scheduling point per batch instead of per message). A fragmented message is
        returned alone, assembled. Raises ConnectionClosed once closed, after the
        messages received before the close.
        """
        queue = self._queue
        while not queue:
            if self._deferred:
                self._flush_nowait()
            await self._await_more()
        count = 0
        for item in queue:
            if (item.__class__ is not str and item.__class__ is not bytes) or count == max_messages:
                break
            count += 1
        if not count:
            if queue[0] is _FAILURE_MARK:
                del queue[0]
                self._complete_failure(flush=True)
                return await self.receive_many(max_messages)
            if queue[0] is _CLOSED_SENTINEL:
                await trio.lowlevel.checkpoint()
                raise self._closed_exc()
            return [await self._assemble()]
        batch = queue[:count]
        del queue[:count]
        if self._resume_lot_ is not None and len(queue) <= self.limits.queue_low:
            self._resume_lot_.unpark_all()
        await self._yield_point()
        return batch

    async def _assemble(self) -> Data:
        parts: list[Any] = []
        is_text = False
        async for chunk in self._chunks():
            parts.append(chunk)
            is_text = isinstance(chunk, str)
        return "".join(parts) if is_text else b"".join(parts)

    async def receive_stream(self) -> AsyncIterator[Data]:
        """Iterate over the pieces of the next message as they arrive (one per frame).

        Use for large messages you want to process without holding them whole::

            async for chunk in ws.receive_stream(): ...
        """
        async for chunk in self._chunks():
            yield chunk

    async def _chunks(self) -> AsyncIterator[Data]:
        queue = self._queue
        while True:
            while not queue:
                if self._deferred:
                    self._flush_nowait()
                await self._await_more()
            item = queue[0]
            if item is _FAILURE_MARK:
                del queue[0]
                self._complete_failure(flush=True)
                continue
            if item is _CLOSED_SENTINEL:
                raise self._closed_exc()
            del queue[0]
            if len(queue) == self.limits.queue_low and self._resume_lot_ is not None:
                self._resume_lot_.unpark_all()
            if item.__class__ is _Fragment:
                yield item.data
                if item.final:
                    return
            else:
                yield item
                return

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        while True:
            try:
                message = await self.receive()
            except ConnectionClosed as exc:
                if exc.ok:
                    return
                raise
            yield message

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and return when its pong arrives (use a cancel scope to bound it)."""
        if payload is None:
            payload = os.urandom(4)
            while self._pings and payload in self._pings:
                payload = os.urandom(4)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        if self._close_sent or self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        if self._pings is None:
            self._pings = {}
        event = self._pings.get(payload)
        if event is None:
            event = self._pings[payload] = trio.Event()
        self._n_pings += 1
        self._proto.send_ping(payload)
        await self._write(self._proto.data_to_send())
        self._wake_reader()
        with trio.CancelScope() as scope:
            self._ping_scopes_add(scope)
            try:
                await event.wait()
            finally:
                self._ping_scopes_discard(scope)
        if not event.is_set():
            raise self._closed_exc()

    async def pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong."""
        if self._close_sent or self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        self._proto.send_pong(payload)
        await self._write(self._proto.data_to_send())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or finish) the closing handshake and wait for it, bounded by the close timeout."""
        with trio.move_on_after(self.limits.close_timeout) as scope:
            await self._send_close(code, reason)
            self._wake_reader()
            await self._closed_event.wait()
        if scope.cancelled_caught:
            self._abort(1006, "close timeout")
        await self._close_transport()

    def statistics(self) -> Statistics:
        return Statistics(
            messages_received=self._n_msg_in,
            messages_sent=self._n_msg_out,
            bytes_received=self._n_bytes_in,
            bytes_sent=self._n_bytes_out,
            reads=self._n_reads,
            writes=self._n_writes,
            pings_sent=self._n_pings,
            pongs_received=self._n_pongs,
            inbound_queue=len(self._queue),
            outbound_buffered=len(self._out),
            state=self.state,
            close_code=self.close_code,
            close_reason=self.close_reason,
        )

    # ------------------------------------------------------------------ internals: helpers

    # Synchronization objects are created on first use: an idle connection holds none.

    def _can_read_inline(self) -> bool:
        """True when the receiving task may read the socket itself instead of parking."""
        return (
            self._raw is not None
            and self._recv_task is None
            and not self._inline_reader
            # Bytes read with the handshake are fed by the reader task first; reading the
            # socket before that would block on data that already arrived.
            and not self._initial
            and (self._reader_active or self._nursery is not None)
        )

    async def _await_more(self) -> None:
        """Wait until the queue has something: read inline when we can, else park."""
        if self._handler is not None:
            raise _handler_mode_error()
        if self._can_read_inline():
            await self._read_inline()
        else:
            await self._wait_woken()

    @property
    def _resume_lot(self) -> trio.lowlevel.ParkingLot:
        if self._resume_lot_ is None:
            self._resume_lot_ = trio.lowlevel.ParkingLot()
        return self._resume_lot_

    @property
    def _drain_lot(self) -> trio.lowlevel.ParkingLot:
        if self._drain_lot_ is None:
            self._drain_lot_ = trio.lowlevel.ParkingLot()
        return self._drain_lot_

    @property
    def _write_lock(self) -> trio.Lock:
        if self._write_lock_ is None:
            self._write_lock_ = trio.Lock()
        return self._write_lock_

    @property
    def _closed_event(self) -> trio.Event:
        if self._closed_event_ is None:
            self._closed_event_ = trio.Event()
            if self.state == "CLOSED":
                self._closed_event_.set()
        return self._closed_event_

    def _ping_scopes_add(self, scope: trio.CancelScope) -> None:
        if self._ping_scopes is None:
            self._ping_scopes = set()
        self._ping_scopes.add(scope)
        if self.state == "CLOSED":
            scope.cancel()

    def _ping_scopes_discard(self, scope: trio.CancelScope) -> None:
        if self._ping_scopes is not None:
            self._ping_scopes.discard(scope)

    def _closed_exc(self) -> ConnectionClosed:
        if self.close_code is None:
            return closed_exception(1006, "")
        return closed_exception(self.close_code, self.close_reason or "")

    def _yield_point(self) -> Coroutine[Any, Any, None]:
        """The checkpoint to await after an operation that did not block.

        A cancellation check every time, a full scheduler yield every _YIELD_EVERY
        operations (fairness without a context switch per message). Returns the
        coroutine instead of being one, so the hot paths pay no extra frame.
        """
        ops = self._ops = self._ops + 1
        if ops % _YIELD_EVERY:
            return _checkpoint_if_cancelled()
        return _checkpoint()

    # ------------------------------------------------------------------ internals: writing

    def _send_now(self, data: bytes | bytearray | memoryview) -> int:
        """One non-blocking send on the raw socket.

        Returns the bytes written (0 when the kernel buffer is full), or -1 after a
        socket error, in which case the connection has been aborted with 1006.
        """
        assert self._raw is not None
        try:
            sent: int = self._raw.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._abort(1006, "")
            return -1
        if sent:
            self._n_writes += 1
            self._n_bytes_out += sent
        return sent

    async def _write(self, data: bytes) -> None:
        raw = self._raw
        if raw is None:
            await self._write_stream(data)
            return
        if self._transport_closed:
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        if not self._flushing and not self._out:
            sent = self._send_now(data)
            if sent < 0:
                await trio.lowlevel.checkpoint()
                raise self._closed_exc()
            if sent == len(data):
                await self._yield_point()
                return
            self._out += memoryview(data)[sent:]
            await self._flush_raw()
            return
        if not self._flushing:
            # Coalesced replies are pending (see send()): this one goes with them, in one write.
            out = self._out
            out += data
            self._deferred = False
            sent = self._send_now(out)
            if sent < 0:
                await trio.lowlevel.checkpoint()
                raise self._closed_exc()
            if sent:
                del out[:sent]
            if out:
                await self._flush_raw()
                return
            await self._yield_point()
            return
        # Someone else is flushing: wait for room (bounded buffer), then queue behind them.
        while self._flushing and len(self._out) > self.limits.write_high and not self._transport_closed:
            await self._drain_lot.park()
        if self._transport_closed:
            raise self._closed_exc()
        self._out += data
        self._deferred = False
        if self._flushing:
            await self._yield_point()
        else:
            await self._flush_raw()

    async def wait_written(self) -> None:
        """Wait until the outgoing buffer is empty (written by this task, or by the task
        already flushing it). Raises ConnectionClosed if the transport fails."""
        while self._out and not self._transport_closed:
            if self._raw is not None:
                if self._flushing:
                    await self._drain_lot.park()  # woken as the flusher finishes
                else:
                    await self._flush_raw()
            elif self._write_lock.locked():
                await self._drain_lot.park()  # woken as the writer takes the buffer
            else:
                await self._write_stream(b"")

    async def _flush_raw(self) -> None:
        """Drain ``_out`` until it is below the high-water mark (called by one task at a time)."""
        raw = self._raw
        assert raw is not None
        self._flushing = True
        try:
            out = self._out
            while out:
                sent = self._send_now(out)
                if sent < 0:
                    raise self._closed_exc()
                if sent:
                    del out[:sent]
                    if len(out) <= self.limits.write_low and self._drain_lot_ is not None:
                        self._drain_lot_.unpark_all()
                if out:
                    await trio.lowlevel.wait_writable(raw)
        finally:
            self._flushing = False
            if self._drain_lot_ is not None:
                self._drain_lot_.unpark_all()

    async def _write_stream(self, data: bytes) -> None:
        if self._transport_closed:
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        self._out += data
        if self._write_lock.locked():
            while len(self._out) > self.limits.write_high and not self._transport_closed:
                await self._drain_lot.park()
            await trio.lowlevel.checkpoint()
            return
        async with self._write_lock:
            while self._out:
                chunk = bytes(self._out)
                self._out.clear()
                self._drain_lot.unpark_all()
                try:
                    await self.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._abort(1006, "")
                    raise self._closed_exc() from None
                self._n_writes += 1
                self._n_bytes_out += len(chunk)

    def _flush_nowait(self) -> None:
        """Write coalesced replies now, without waiting (the rest goes to a flusher task)."""
        self._deferred = False
        out = self._out
        raw = self._raw
        if not out or self._flushing or self._transport_closed or raw is None:
            return
        sent = self._send_now(out)
        if sent < 0:
            return
        if sent:
            del out[:sent]
        if out:
            self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        """Make sure someone drains ``_out`` (spawns a helper task only for slow peers)."""
        if not self._out or self._transport_closed or self._nursery is None:
            return
        if self._raw is not None:
            if not self._flushing:
                self._flushing = True
                self._nursery.start_soon(self._flush_task)
        elif not self._write_lock.locked():
            self._nursery.start_soon(self._flush_task)

    async def _flush_task(self) -> None:
        try:
            if self._raw is not None:
                self._flushing = False
                await self._flush_raw()
            else:
                await self._write_stream(b"")
        except ConnectionClosed:
            pass

    def write_frame_nowait(self, frame: bytes, limit: int) -> bool:
        """Queue an encoded frame without waiting (broadcast). False if over ``limit``."""
        if self._close_sent or self.state != "OPEN" or self._transport_closed:
            return True
        raw = self._raw
        if raw is not None and not self._flushing and not self._out:
            sent = self._send_now(frame)
            if sent < 0:
                return True
            self._n_msg_out += 1
            if sent == len(frame):
                return True
            self._out += memoryview(frame)[sent:]
        else:
            if len(self._out) + len(frame) > limit:
                return False
            self._out += frame
            self._n_msg_out += 1
        self._ensure_flusher()
        return True

    async def _flush_from_reader(self) -> None:
        if not self._out or self._transport_closed:
            return
        if self._raw is not None:
            if self._flushing:
                return  # the active flusher will send it
            try:
                await self._flush_raw()
            except ConnectionClosed:
                pass
        else:
            if self._write_lock.locked():
                return
            try:
                await self._write_stream(b"")
            except ConnectionClosed:
                pass

    # ------------------------------------------------------------------ internals: reading

    async def run_reader(self) -> None:
        """Read and dispatch until the connection is closed. Never raises (except Cancelled)."""
        self._reader_active = True
        try:
            if self._initial:
                initial, self._initial = self._initial, b""
                self._feed(memoryview(initial))
                await self._flush_from_reader()
            if self._raw is None:
                await self._read_stream()
            elif self._handler is not None:
                await self._read_raw_for_handler()
            else:
                await self._read_raw()
        except trio.Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a reader failure closes this connection only
            logger.debug("reader failed", exc_info=True)
            if self.state != "CLOSED":
                self._abort(1011 if not isinstance(exc, OSError) else 1006, "")
        finally:
            self._reader_active = False
            if self.state != "CLOSED" and self._eof:
                self._abort(1006, "")

    async def _wait_queue_room(self) -> None:
        while len(self._queue) >= self.limits.max_queue and self.state != "CLOSED":
            await self._resume_lot.park()

    async def _read_raw(self) -> None:
        """The reader task's loop on plain TCP.

        A task blocked in :meth:`receive` with an empty queue reads the socket itself
        (one scheduler hop per read instead of two); the reader task then steps aside,
        parked, until someone needs it again: ``ping()``/``close()`` waiting for an
        answer, or the keepalive tick noticing that nobody is receiving (so control
        frames keep being answered while the application does not read).
        """
        while self.state != "CLOSED" and not self._eof:
            if len(self._queue) >= self.limits.max_queue:
                await self._wait_queue_room()
                continue
            if self._inline_reader or self._receiver_owns:
                if self._nursery is not None:
                    # The receiving task reads; this task ends (an idle connection then
                    # holds one task, not two) and _wake_reader starts a new one when
                    # somebody needs reading while nobody receives.
                    return
                if self._reader_lot_ is None:
                    self._reader_lot_ = trio.lowlevel.ParkingLot()
                await self._reader_lot_.park()
                continue
            await self._read_step(True)
        if self._eof:
            self._on_eof()

    async def _read_raw_for_handler(self) -> None:
        """The read loop of callback mode on plain TCP (see :class:`MessageHandler`).

        Every round has exactly one scheduling point. A round whose read found data
        without waiting yields once the replies are written: the other connections run
        meanwhile, and under load this peer's next data has arrived by the time the
        read comes round again, so the loop rarely pays for a failed ``recv`` plus a
        ``wait_readable`` re-arm. A read that had to wait was already a yield.
        """
        raw = self._raw
        assert raw is not None
        recv_into = raw.recv_into
        view = _scratch_view
        while self.state != "CLOSED" and not self._eof:
            try:
                n = recv_into(view)
            except BlockingIOError:
                n = -1
            except OSError:
                self._eof = True
                return
            if n < 0:
                # Waiting outside the except block: no exception kept alive while idle.
                await trio.lowlevel.wait_readable(raw)
                try:
                    n = recv_into(view)
                except BlockingIOError:
                    continue
                except OSError:
                    self._eof = True
                    return
                waited = True
            else:
                waited = False
            if n == 0:
                self._eof = True
                return
            self._n_reads += 1
            self._n_bytes_in += n
            self._feed(view[:n])
            out = self._out
            if out and self._backlog is None and not self._flushing and not self._transport_closed:
                # The usual case: the kernel takes all the replies of this read at once.
                sent = self._send_now(out)
                if sent == len(out):
                    out.clear()
                elif sent > 0:
                    del out[:sent]
            if out or self._backlog:
                await self._settle_batch()  # waits while the peer does not take the replies
            if not waited:
                await _checkpoint()

    async def _read_inline(self) -> None:
        """One read by the receiving task itself (plain TCP, queue empty)."""
        self._receiver_owns = True
        self._inline_reader = True
        scope = self._reader_scope
        if scope is not None:
            scope.cancel()  # the reader task stops waiting on the socket (synchronously)
        try:
            await self._read_step(False)
            if self._eof:
                self._on_eof()
        except BaseException:
            self._receiver_owns = False  # cancelled or failed: hand the socket back
            raise
        finally:
            self._inline_reader = False
            if not self._receiver_owns or self._recv_task is not None or (
                self._recv_lot is not None and len(self._recv_lot)
            ):
                # Someone else waits for data (or asked for the reader): the reader reads.
                self._wake_reader()

    def _wake_reader(self) -> None:
        """Ask the reader task to read again (someone waits for a pong or a close)."""
        self._receiver_owns = False
        if self._reader_lot_ is not None:
            self._reader_lot_.unpark_all()
        if (
            not self._reader_active
            and self._raw is not None
            and self.state != "CLOSED"
            and not self._eof
            and not self._transport_closed
        ):
            self._start_reader()

    def _start_reader(self) -> None:
        """Spawn :meth:`run_reader` into ``_nursery`` (at most one reader at a time)."""
        if self._reader_active or self._nursery is None:
            return
        self._reader_active = True  # run_reader sets it too; no second reader meanwhile
        try:
            self._nursery.start_soon(self.run_reader)
        except RuntimeError:  # the nursery is closing (shutdown)
            self._reader_active = False

    async def _wait_readable(self, is_reader: bool) -> None:
        raw = self._raw
        assert raw is not None
        if is_reader:
            with trio.CancelScope() as scope:
                self._reader_scope = scope
                try:
                    await trio.lowlevel.wait_readable(raw)
                finally:
                    self._reader_scope = None
        else:
            await trio.lowlevel.wait_readable(raw)

    async def _read_step(self, is_reader: bool) -> None:
        """Read once (waiting for readability if nothing is there) and dispatch."""
        raw = self._raw
        assert raw is not None
        if self._read_hot and not is_reader:
            # The last read found data without waiting (a busy peer): yield before this
            # one. The other connections run meanwhile and this peer's answer to what we
            # just wrote is likely there by then, saving a failed recv and the re-arm
            # of a wait_readable.
            await _checkpoint()
        # No await between filling the shared scratch buffer and feeding it to the
        # core (which copies only the tail of an incomplete frame).
        try:
            n = raw.recv_into(_scratch_view)
        except BlockingIOError:
            n = -1
        except OSError:
            self._eof = True
            return
        self._read_hot = n > 0
        if n < 0:
            # Waiting outside the except block: no exception/traceback kept alive while idle.
            if is_reader:
                await self._wait_readable(True)
                return
            await trio.lowlevel.wait_readable(raw)  # one coroutine frame less per idle connection
            # Readable: read right away (saves a round through receive() per message).
            try:
                n = raw.recv_into(_scratch_view)
            except BlockingIOError:
                return
            except OSError:
                self._eof = True
                return
        if n == 0:
            self._eof = True
            return
        self._n_reads += 1
        self._n_bytes_in += n
        self._feed(_scratch_view[:n])
        if self._out:
            await self._flush_from_reader()
        if is_reader and self._ops % _YIELD_EVERY == 0:
            self._ops += 1
            await trio.lowlevel.checkpoint()

    async def _read_stream(self) -> None:
        stream = self.stream
        while self.state != "CLOSED" and not self._eof:
            if len(self._queue) >= self.limits.max_queue:
                await self._wait_queue_room()
                continue
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self._eof = True
                break
            self._n_reads += 1
            self._n_bytes_in += len(data)
            self._feed(data)
            if self._handler is not None:
                await self._settle_batch()
            elif self._out:
                await self._flush_from_reader()
        if self._eof:
            self._on_eof()

    def _feed(self, data: Any) -> None:
        """Hand the bytes of one read to the core and dispatch its events (no await here)."""
        proto = self._proto
        self._dispatch(proto.receive_and_events(data))
        if proto.failure_pending:
            self._failure_found()

    def _failure_found(self) -> None:
        """The peer broke the protocol in this read, after the messages just dispatched.

        Those messages (and any still queued) reach the application, and what it sends
        in reply goes out before the close frame: a MessageHandler has answered them
        already (unless some are held back by write_high: then after those); an ``async
        def`` handler has until it asks for the message after them, at most
        ``close_timeout``. Then the close frame goes out (see _complete_failure).
        """
        if self._failure_scope is not None:
            return  # found in an earlier read: the deadline runs (later reads are discarded)
        failure = self._proto.failure
        assert failure is not None
        if self.close_code is None:
            self.close_code, self.close_reason = failure.code, str(failure)
        deadline = trio.current_time() + self.limits.close_timeout
        if self._handler is not None:
            scope = self._closing_scope
            if scope is not None:
                scope.deadline = min(scope.deadline, deadline)
            if self._backlog is None:
                self._complete_failure()
            return  # else _settle_batch completes it once the backlog is delivered
        queue = self._queue
        if not queue or self._nursery is None or self._close_sent:
            self._complete_failure()
            return
        queue.append(_FAILURE_MARK)
        self._wake_receivers()
        scope = self._failure_scope = trio.CancelScope(deadline=deadline)
        self._nursery.start_soon(self._failure_deadline, scope)

    async def _failure_deadline(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        if self._proto.failure_pending:
            self._complete_failure(flush=True)

    def _complete_failure(self, flush: bool = False) -> None:
        """Queue the close frame of a held protocol failure (after the replies queued so
        far). ``flush``: write it from here (the caller is not the reader, which writes
        what a read queued)."""
        proto = self._proto
        if not proto.failure_pending:
            return
        scope = self._failure_scope
        if scope is not None:
            self._failure_scope = None
            scope.cancel()
        proto.complete_failure()
        queue = self._queue
        if _FAILURE_MARK in queue:
            queue.remove(_FAILURE_MARK)
        self._dispatch()
        if flush:
            if self._deferred:
                self._flush_nowait()
            else:
                self._ensure_flusher()

    def _dispatch(self, events: list[Any] | None = None) -> None:
        proto = self._proto
        queue = self._queue
        delivered = False
        event: Any
        if events is None:
            events = proto.events()
        handler = self._handler
        if handler is not None:
            self._dispatching = True
            out = self._out
            write_high = self.limits.write_high
        for event in events:
            cls = event.__class__
            if cls is str or cls is bytes:
                # A whole single-frame message (the core's plain_messages mode).
                self._n_msg_in += 1
                if handler is None:
                    queue.append(event)
                    delivered = True
                elif self._close_sent:
                    pass  # closing: nothing more for the application
                elif self._backlog is None and len(out) <= write_high:
                    # _call_handler(), inlined (the hot path of callback mode).
                    try:
                        handler.on_message(self, event)
                    except Exception:  # noqa: BLE001 - the handler's bug closes this connection with 1011
                        logger.exception("WebSocket on_message failed")
                        self.close_nowait(1011, "internal error")
                else:
                    self._offer(handler, event)
            elif cls is _MessageChunk:
                if event.final:
                    self._n_msg_in += 1
                if handler is not None:
                    self._assemble_for_handler(handler, event)
                    continue
                if event.first and event.final:
                    queue.append(event.data)
                else:
                    queue.append(_Fragment(event.data, event.first, event.final, event.is_text))
                delivered = True
            elif cls is _Ping:
                if handler is not None and not self._close_sent:
                    # Callback mode answers pings here, in the order of the peer's
                    # frames: a pong goes before the replies to messages completed
                    # after its ping (the core's auto_pong is off, see _serve_handler).
                    out += _speedups.encode_frame(OP_PONG, event.payload, True, 0, None)
            elif cls is _Pong:
                self._n_pongs += 1
                self._on_pong(event.payload)
            elif cls is _CloseReceived:
                if self.close_code is None:
                    self.close_code = event.code
                    self.close_reason = event.reason
                if self.state == "OPEN":
                    self.state = "CLOSING"
            elif cls is _WSClosed:
                if self.close_code is None:
                    failure = proto.failure
                    if failure is not None:
                        self.close_code, self.close_reason = failure.code, str(failure)
                    else:
                        self.close_code, self.close_reason = event.code, event.reason
                self._set_closed()
        if proto.close_sent is not None:
            self._close_sent = True
            if self.state == "OPEN":
                self.state = "CLOSING"
        failure = proto.failure
        if failure is not None and self.close_code is None:
            # We failed the connection (a client then waits for the server's EOF).
            self.close_code, self.close_reason = failure.code, str(failure)
        queued = proto.data_to_send()
        if queued:
            self._out += queued
        if delivered:
            self._wake_receivers()
        self._dispatching = False

    def _call_handler(self, handler: MessageHandler, message: Data) -> None:
        try:
            handler.on_message(self, message)
        except Exception:  # noqa: BLE001 - the handler's bug closes this connection with 1011
            logger.exception("WebSocket on_message failed")
            self.close_nowait(1011, "internal error")

    def _assemble_for_handler(self, handler: MessageHandler, chunk: Any) -> None:
        """Collect a fragmented message's pieces; the whole message goes to on_message.
        (The core bounds its total size by max_message_size.)"""
        if chunk.first:
            self._parts = []
        parts = self._parts
        assert parts is not None
        parts.append(chunk.data)
        if not chunk.final:
            return
        self._parts = None
        if not self._close_sent:
            self._offer(handler, "".join(parts) if chunk.is_text else b"".join(parts))

    def _offer(self, handler: MessageHandler, message: Data) -> None:
        """Deliver now, or hold back (in read order) while the replies made so far are
        above ``write_high``: the reader writes them first (see _settle_batch)."""
        if self._backlog is not None:
            self._backlog.append(message)
        elif len(self._out) > self.limits.write_high:
            self._backlog = [message]
        else:
            self._call_handler(handler, message)

    async def _settle_batch(self) -> None:
        """Callback mode, after each read: write the replies, and deliver the messages
        held back meanwhile, before anything more is read (TCP backpressure, with at
        most one read's worth of messages and write_high of replies in memory)."""
        while True:
            try:
                await self.wait_written()
            except ConnectionClosed:
                self._backlog = None
                return
            backlog = self._backlog
            handler = self._handler
            if backlog is None or handler is None or self._close_sent or self.state == "CLOSED":
                self._backlog = None
                if self._proto.failure_pending:
                    # The messages before the peer's violation are answered: close now.
                    self._complete_failure()
                    continue
                return
            self._backlog = None
            self._dispatching = True
            try:
                for index, message in enumerate(backlog):
                    if self._close_sent:
                        break
                    if len(self._out) > self.limits.write_high:
                        self._backlog = backlog[index:]
                        break
                    self._call_handler(handler, message)
            finally:
                self._dispatching = False

    async def _serve_handler(self, handler: MessageHandler) -> None:
        """Run ``handler``'s callbacks on this connection until it is closed (server side).

        This task is the connection's reader. It returns once the connection is closed
        (handshake done, or ``close_timeout`` after a close was sent, or the transport
        gone) and the transport dropped; the caller then runs :meth:`_handler_closed`.
        """
        self._handler = handler
        self._proto.auto_pong = False  # _dispatch answers pings in frame order
        self._reader_active = True  # this task reads: no reader task is ever started
        try:
            try:
                handler.on_open(self)
            except Exception:  # noqa: BLE001
                logger.exception("WebSocket on_open failed")
                self.close_nowait(1011, "internal error")
            with trio.CancelScope() as scope:
                self._closing_scope = scope
                if self._close_sent:
                    scope.deadline = trio.current_time() + self.limits.close_timeout
                await self.run_reader()
            if scope.cancelled_caught and self.state != "CLOSED":
                self._abort(1006, "close timeout")
        finally:
            self._closing_scope = None
            self._reader_active = False
        if self.state != "CLOSED":
            self._abort(1006, "")
        await self._close_transport()

    def _handler_closed(self) -> None:
        """Run the handler's ``on_close`` (once, after the connection is closed)."""
        handler, self._handler = self._handler, None
        if handler is None:
            return
        self._parts = self._backlog = None
        try:
            handler.on_close(self)
        except Exception:  # noqa: BLE001
            logger.exception("WebSocket on_close failed")

    def _on_pong(self, payload: bytes) -> None:
        if not self._pings:
            return
        event = self._pings.pop(payload, None)
        if event is not None:
            # A pong acknowledges every ping sent before it (RFC 6455 5.5.3 allows this).
            for key in list(self._pings):
                self._pings.pop(key).set()
            event.set()

    def _set_closed(self) -> None:
        if self.state == "CLOSED":
            return
        self.state = "CLOSED"
        if self._failure_scope is not None:
            self._failure_scope.cancel()
            self._failure_scope = None
        if self.close_code is None:
            self.close_code = 1006
            self.close_reason = ""
        self._queue.append(_CLOSED_SENTINEL)
        self._wake_receivers()
        if self._resume_lot_ is not None:
            self._resume_lot_.unpark_all()
        if self._drain_lot_ is not None:
            self._drain_lot_.unpark_all()
        if self._closed_event_ is not None:
            self._closed_event_.set()
        if self._ping_scopes:
            for scope in self._ping_scopes:
                scope.cancel()

    def _on_eof(self) -> None:
        if self.state != "CLOSED":
            self._proto.receive_eof()
            self._dispatch()
        if self.state != "CLOSED":
            if self.close_code is None:
                self.close_code = 1006
                self.close_reason = ""
            self._set_closed()

    def _abort(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._set_closed()
        self._transport_closed = True
        try:
            if self._raw is not None:
                self._raw.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    async def _send_close(self, code: int, reason: str) -> None:
        if self._proto.failure_pending:
            # The peer broke the protocol: its close code is the one to send.
            self._complete_failure()
            await self._flush_from_reader()
            return
        if self._close_sent or self.state == "CLOSED":
            await trio.lowlevel.checkpoint()
            return
        self._proto.close(None if code == 1005 else code, reason)  # ValueError for a bad code/reason
        self._close_sent = True
        if self.state == "OPEN":
            self.state = "CLOSING"
        try:
            await self._write(self._proto.data_to_send())
        except ConnectionClosed:
            return

    async def _close_transport(self) -> None:
        """Flush what is queued (the close echo), then drop the transport."""
        if self._stream_closed:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self.limits.close_timeout):
            while self._out and not self._transport_closed:
                try:
                    if self._raw is not None and not self._flushing:
                        await self._flush_raw()
                    elif self._raw is None and not self._write_lock.locked():
                        await self._write_stream(b"")
                    else:
                        await self._drain_lot.park()
                except ConnectionClosed:
                    break
        self._transport_closed = True
        self._stream_closed = True
        self._set_closed()
        with trio.CancelScope(shield=True):
            try:
                await trio.aclose_forcefully(self.stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def _queue_control(self, frame: bytes) -> None:
        """Send a control frame from outside any task of this connection (keepalive)."""
        if self._transport_closed:
            return
        raw = self._raw
        if raw is not None and not self._flushing and not self._out:
            sent = self._send_now(frame)
            if sent < 0:
                return
            if sent == len(frame):
                return
            self._out += memoryview(frame)[sent:]
        else:
            self._out += frame
        self._ensure_flusher()

    def _slow_consumer(self) -> None:
        """The fan-out queue overflowed: close 1008 "slow consumer".

        The close frame goes behind what is already queued (the stream stays
        well-formed); the connection's task drops TCP after at most the close timeout.
        """
        if self.state == "CLOSED":
            return
        if not self._close_sent:
            self._close_sent = True
            self._proto.close(1008, "slow consumer")
            self._out += self._proto.data_to_send()
        if self.close_code is None:
            self.close_code = 1008
            self.close_reason = "slow consumer"
        _PROCESS.websocket_slow_consumer_closes += 1
        self._set_closed()
        self._ensure_flusher()

    def _keepalive_failed(self) -> None:
        """No pong within the ping timeout: close 1011 and abort the transport."""
        if self.state == "CLOSED":
            return
        if not self._close_sent:
            self._close_sent = True
            self._proto.close(1011, "keepalive ping timeout")
            frame = self._proto.data_to_send()
            if self._raw is not None and not self._out:
                try:
                    self._raw.send(frame)
                except OSError:
                    pass
        self._abort(1011, "keepalive ping timeout")

    async def drain_until_closed(self) -> None:
        """Read (answering control frames) until the peer's close arrives or EOF.

        Used by the server's shutdown path, where the reader task is being cancelled.
        """
        if self.state == "CLOSED":
            return
        if self._raw is None:
            await trio.sleep(0)  # let a cancelled reader task unwind first
            if self._reader_active:
                await self._closed_event.wait()
            else:
                await self.run_reader()
            return
        scope = self._reader_scope
        if scope is not None:
            scope.cancel()  # frees the socket for us (synchronously)
        self._receiver_owns = True
        self._inline_reader = True
        try:
            while self.state != "CLOSED" and not self._eof:
                await self._read_step(False)
            if self._eof:
                self._on_eof()
        finally:
            self._inline_reader = False
