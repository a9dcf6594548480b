"""``connect_engineio()``: a trio Engine.IO v4 client (long-polling, WebSocket, upgrade).

It drives the sans-I/O :class:`volleyio.engineio.client.EngineIOClient`, which decides
what to send and when; this module only does the I/O:

* Long-polling is HTTP/1.1 (h11) on two keep-alive TCP (or TLS) connections: one carries
  the long-poll GETs, the other the POSTs, so one of each can be in flight (the most the
  protocol allows). A connection the server closed between requests is reopened; a
  request that got no answer byte on a reused connection is retried once on a new one
  (the server closed an idle keep-alive connection under our feet). Queued messages go
  out together in one POST: at most ``maxPayload`` bytes and 16 packets (python-engineio
  refuses bigger payloads; see ``volleyio.engineio.client``).
* WebSocket is :func:`volleyio.trio.connect` with its own keepalive off (Engine.IO has
  its heartbeat). A binary frame is a raw binary message.
* The upgrade (probe ``2probe``/``3probe``, pause polling, ``5``) is the core's; if the
  WebSocket cannot be opened, is dropped, or the probe takes longer than
  ``upgrade_timeout``, the session stays on polling and nothing buffered is lost.

Usage::

    async with connect_engineio("http://127.0.0.1:3000") as eio:
        await eio.send("hello")            # str: text message, bytes: binary message
        async for message in eio:          # ends when the session closes
            ...

Flow control: ``send()`` waits while more than ``max_buffer`` bytes are queued and not
yet in a request/frame; when ``max_queue`` received messages are waiting for
``receive()``, the client stops polling / reading the WebSocket (a client that never
reads therefore stops answering pings, and the server ends the session).

Close reasons (``EngineIOClosed.reason``, the Node client's names):

* ``"forced close"``: we closed (``close()`` or leaving the ``async with``);
* ``"transport close"``: the server closed the session (a ``1`` packet, or the
  WebSocket in use closed);
* ``"transport error"``: a request failed (network error, non-200 answer: the server
  dropped the session);
* ``"ping timeout"``: no ping from the server within ``pingInterval + pingTimeout``;
* ``"parse error"``: the server sent something that is not Engine.IO.
"""

from __future__ import annotations

import logging
import ssl as _ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import h11
import trio

from ..engineio.client import (
    ClientClosed,
    ClientConfig,
    ClientMessage,
    ClientOpened,
    ClientRequest,
    ClientUpgraded,
    EngineIOClient,
)
from ._client import WSURL, connect, parse_url
from ._connection import WebSocketConnection
from ._errors import BaseExceptionGroup, ConnectError, ConnectionClosed, EngineIOClosed, unwrap_group

__all__ = [
    "EngineIOClientConnection",
    "EngineIOConnectError",
    "EngineIOUpgradeError",
    "connect_engineio",
]

logger = logging.getLogger("volleyio.trio.engineio_client")

MAX_RESPONSE_HEAD = 32 * 1024
_BODY_PREVIEW = 200


class EngineIOConnectError(ConnectError):
    """The Engine.IO handshake failed. ``status`` and ``body`` are the server's answer
    when it gave one (e.g. 400 and ``{"code":0,"message":"Transport unknown"}``)."""

    def __init__(self, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message, status)
        self.body = body


class EngineIOUpgradeError(ConnectError):
    """``wait_upgraded()``: the session cannot move to WebSocket (not offered, disabled,
    or the upgrade failed); it keeps working over polling."""


class _Dropped(Exception):
    """The connection ended before any byte of the response arrived."""


class _HttpChannel:
    """One keep-alive HTTP/1.1 connection used for one request at a time."""

    def __init__(self, target: WSURL, ssl_context: _ssl.SSLContext | None,
                 headers: Sequence[tuple[str, str]], max_body: int) -> None:
        self._target = target
        self._ssl_context = ssl_context
        self._headers = list(headers)
        self._max_body = max_body
        self._stream: trio.abc.Stream | None = None
        self._h11: h11.Connection | None = None
        #: TCP connections opened so far.
        self.connects = 0
        self.requests = 0

    async def _connect(self) -> None:
        target = self._target
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from None
        try:
            if target.secure:
                ctx = self._ssl_context or _ssl.create_default_context()
                stream = trio.SSLStream(stream, ctx, server_hostname=target.host, https_compatible=True)
                await stream.do_handshake()
        except (trio.BrokenResourceError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            cause = exc.__cause__ or exc
            raise ConnectError(f"TLS handshake with {target.host}:{target.port} failed: {cause}") from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.connects += 1

    async def discard(self) -> None:
        stream, self._stream, self._h11 = self._stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def request(self, request: ClientRequest) -> tuple[int, bytes]:
        """``(status, body)``; raises ConnectError when the exchange fails."""
        self.requests += 1
        for attempt in range(2):
            reused = self._stream is not None
            if not reused:
                await self._connect()
            try:
                return await self._exchange(request)
            except _Dropped:
                await self.discard()
                if not reused or attempt:
                    raise ConnectError("the server closed the connection without answering") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError) as exc:
                await self.discard()
                raise ConnectError(f"HTTP request failed: {exc!r}") from None
            except BaseException:
                await self.discard()  # cancelled mid-exchange: the connection state is unknown
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, request: ClientRequest) -> tuple[int, bytes]:
        stream, conn = self._stream, self._h11
        assert stream is not None and conn is not None
        target = request.path + ("?" + urlencode(list(request.query.items())) if request.query else "")
        headers = [("Host", self._target.host_header), ("Accept", "*/*"), *self._headers, *request.headers]
        if request.method != "GET":
            headers.append(("Content-Length", str(len(request.body))))
        out = conn.send(h11.Request(method=request.method, target=target, headers=headers)) or b""
        if request.body:
            out += conn.send(h11.Data(data=request.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        got_any = False
        try:
            await stream.send_all(out)
        except (trio.BrokenResourceError, OSError):
            raise _Dropped() from None
        status: int | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, OSError):
                    if got_any:
                        raise
                    raise _Dropped() from None
                if not data and not got_any:
                    raise _Dropped()
                got_any = True
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    raise ConnectError(f"HTTP response body larger than {self._max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectError("connection closed in the middle of the response")
            # InformationalResponse (1xx): wait for the final one
        assert status is not None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state in (h11.MUST_CLOSE, h11.CLOSED):
            await self.discard()
        else:
            conn.start_next_cycle()
        return status, bytes(body)


class EngineIOClientConnection:
    """An open Engine.IO session (see :func:`connect_engineio`)."""

    def __init__(self, url: str, *, path: str, transports: Sequence[str], upgrade: bool,
                 headers: Sequence[tuple[str, str]], query: Mapping[str, str] | None,
                 ssl_context: _ssl.SSLContext | None, upgrade_timeout: float, close_timeout: float,
                 max_buffer: int, max_queue: int, max_message_size: int) -> None:
        transports = tuple(transports)
        if not transports or any(t not in ("polling", "websocket") for t in transports):
            raise ValueError(f"transports must be 'polling' and/or 'websocket', not {transports!r}")
        target = parse_url(url)
        parts = urlsplit(url)
        base_path = parts.path.rstrip("/")
        extra_query = dict(parse_qsl(parts.query))
        extra_query.update(query or {})
        target.target = "/"
        self._target = target
        self._headers = list(headers)
        self._ssl_context = ssl_context
        self._upgrade_timeout = upgrade_timeout
        self._close_timeout = close_timeout
        self._max_buffer = max_buffer
        self._max_queue = max_queue
        self._max_message_size = max_message_size
        self.core = EngineIOClient(ClientConfig(
            path=base_path + "/" + path.lstrip("/"), transports=transports, upgrade=upgrade,
            extra_query=extra_query,
        ))
        self.core.set_waker(self._notify)
        #: The session id the server gave.
        self.sid = ""
        #: The handshake: ``sid``, ``upgrades``, ``pingInterval``, ``pingTimeout`` (ms), ``maxPayload``.
        self.handshake: dict[str, Any] = {}
        self._changed = trio.Event()
        self._incoming: deque[str | bytes] = deque()
        self._close_reason: str | None = None
        self._close_description = ""
        self._upgrade_over = trio.Event()  # set when the upgrade is done, failed or impossible
        self._writers = 0  # tasks that still have something to write at close
        self._get = _HttpChannel(target, ssl_context, headers, max_message_size)
        self._post = _HttpChannel(target, ssl_context, headers, max_message_size)
        self._ws_url = ("wss://" if target.secure else "ws://") + target.host_header
        self._n_sent = 0
        self._n_received = 0
        self._n_pings = 0

    # ------------------------------------------------------------------ public API

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"`` (changes when the upgrade completes)."""
        return self.core.transport

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def buffered_amount(self) -> int:
        """Bytes queued by ``send()`` and not yet put into a POST or WebSocket frame."""
        return self.core.buffered_amount

    async def drain(self) -> None:
        """Wait until everything sent so far is in a POST or WebSocket frame (or the
        session closed): e.g. before ``close()``, so that a final message does not share
        a payload with the ``1`` close packet."""
        while self.core.buffered_amount and not self.closed:
            await self._wait_change()
        await trio.lowlevel.checkpoint()

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Queue one message; waits while more than ``max_buffer`` bytes are queued.

        Raises :class:`EngineIOClosed` once the session is closed.
        """
        if not isinstance(data, str):
            data = bytes(data)
        while self.core.buffered_amount > self._max_buffer and not self.closed:
            await self._wait_change()
        if self.closed or not self.core.send(data):
            raise self._closed_exc()
        self._n_sent += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> str | bytes:
        """The next message; messages that arrived before the close are still returned,
        then :class:`EngineIOClosed` is raised."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._incoming:
            if self.closed:
                raise self._closed_exc()
            await self._wait_change()
        message = self._incoming.popleft()
        if len(self._incoming) == self._max_queue - 1:
            self._notify()  # the readers wait for room
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        while True:
            try:
                message = await self.receive()
            except EngineIOClosed:
                return
            yield message

    async def close(self) -> None:
        """Close the session (buffered messages and then ``1`` are sent first) and wait,
        up to ``close_timeout``, for that to be written."""
        if not self.closed:
            self.core.close()
            self._after_core()
        with trio.move_on_after(self._close_timeout):
            while self._writers:
                await self._wait_change()

    async def wait_upgraded(self) -> None:
        """Return once the session is on WebSocket; raise :class:`EngineIOUpgradeError`
        if it never will be (it stays on polling), :class:`EngineIOClosed` if it closed."""
        while True:
            if self.transport == "websocket":
                return
            if self.closed:
                raise self._closed_exc()
            if self._upgrade_over.is_set():
                state = self.core.upgrade_state
                raise EngineIOUpgradeError(
                    "the upgrade to WebSocket failed" if state == "failed" else "no upgrade to WebSocket possible"
                )
            await self._wait_change()

    def statistics(self) -> dict[str, Any]:
        """``sid``, ``transport``, ``upgrade`` ("none", "probing", "pausing", "done",
        "failed"), message counters, ``pings_received``, ``buffered_bytes``,
        ``queued_messages`` (received, not yet read), ``polls``/``posts`` (HTTP requests),
        ``http_connections`` (TCP connections opened for polling), ``close_reason``."""
        return {
            "sid": self.sid,
            "transport": self.transport,
            "upgrade": self.core.upgrade_state,
            "messages_sent": self._n_sent,
            "messages_received": self._n_received,
            "pings_received": self._n_pings,
            "buffered_bytes": self.core.buffered_amount,
            "queued_messages": len(self._incoming),
            "polls": self._get.requests,
            "posts": self._post.requests,
            "http_connections": self._get.connects + self._post.connects,
            "close_reason": self._close_reason,
        }

    # ------------------------------------------------------------------ plumbing

    def _closed_exc(self) -> EngineIOClosed:
        return EngineIOClosed(self._close_reason or "forced close")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    async def _wait_queue_room(self) -> None:
        while len(self._incoming) >= self._max_queue and not self.closed:
            await self._wait_change()

    def _after_core(self) -> None:
        """Act on the core's events; call after every call into the core."""
        for event in self.core.take_events():
            if isinstance(event, ClientMessage):
                self._incoming.append(event.data)
                self._n_received += 1
            elif isinstance(event, ClientOpened):
                self.sid = event.sid
                self.handshake = {
                    "sid": event.sid,
                    "upgrades": list(event.upgrades),
                    "pingInterval": event.ping_interval_ms,
                    "pingTimeout": event.ping_timeout_ms,
                    "maxPayload": event.max_payload,
                }
            elif isinstance(event, ClientUpgraded):
                self._upgrade_over.set()
            elif isinstance(event, ClientClosed):
                self._close_reason = event.reason
                self._close_description = event.description
                self._upgrade_over.set()
        if self.core.upgrade_state == "failed":
            self._upgrade_over.set()
        self._notify()

    # ------------------------------------------------------------------ opening

    async def _open(self, nursery: trio.Nursery) -> None:
        core = self.core
        nursery.start_soon(self._timer_loop)
        if core.transport == "websocket":
            await nursery.start(self._websocket_task, True)
            return
        status, body = await self._get.request(core.handshake_request())
        if status != 200:
            preview = body[:_BODY_PREVIEW].decode("utf-8", "replace")
            raise EngineIOConnectError(f"Engine.IO handshake refused: HTTP {status}: {preview}", status, body)
        core.poll_response(status, body, trio.current_time())
        self._after_core()
        if not core.is_open:
            raise EngineIOConnectError(
                f"invalid Engine.IO handshake answer ({self._close_description}): {body[:_BODY_PREVIEW]!r}",
                status, body,
            )
        nursery.start_soon(self._get_loop)
        self._writers += 1
        nursery.start_soon(self._post_loop)
        if core.should_upgrade:
            nursery.start_soon(self._websocket_task, False)
        else:
            self._upgrade_over.set()

    # ------------------------------------------------------------------ tasks

    async def _timer_loop(self) -> None:
        core = self.core
        while not core.closed:
            deadline = core.next_deadline()
            if deadline is None:
                await self._wait_change()
                continue
            # Pings only push the deadline later, so sleeping until the old one is safe.
            await trio.sleep_until(deadline)
            core.handle_timers(trio.current_time())
            if core.closed:
                self._after_core()

    async def _get_loop(self) -> None:
        core = self.core
        while True:
            await self._wait_queue_room()
            request = core.poll_request()
            if request is None:
                if core.closed or core.transport != "polling":
                    return
                await self._wait_change()
                continue
            try:
                status, body = await self._get.request(request)
            except ConnectError:
                core.request_failed(trio.current_time())
                self._after_core()
                return
            core.poll_response(status, body, trio.current_time())
            self._count_pings(body)
            self._after_core()

    def _count_pings(self, body: bytes) -> None:
        self._n_pings += sum(1 for part in body.split(b"\x1e") if part == b"2")

    async def _post_loop(self) -> None:
        core = self.core
        try:
            while True:
                request = core.post_request()
                if request is None:
                    if core.transport != "polling" or (core.closed and core.buffered_amount == 0):
                        return
                    await self._wait_change()
                    continue
                try:
                    status, _ = await self._post.request(request)
                except ConnectError:
                    core.request_failed(trio.current_time())
                    self._after_core()
                    return
                core.post_response(status, trio.current_time())
                self._after_core()
        finally:
            self._writers -= 1
            self._notify()

    async def _websocket_task(self, initial: bool, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open the WebSocket: the first transport (``initial``) or the upgrade probe."""
        core = self.core
        request = core.websocket_request()
        url = self._ws_url + request.path + "?" + urlencode(list(request.query.items()))
        opened = False
        try:
            async with connect(
                url, extra_headers=self._headers, ssl_context=self._ssl_context,
                ping_interval=None, ping_timeout=None, max_message_size=self._max_message_size,
                max_queue=64, open_timeout=self._upgrade_timeout, close_timeout=self._close_timeout,
            ) as ws:
                opened = True
                core.websocket_opened(trio.current_time())
                self._after_core()
                if initial:
                    await self._websocket_handshake(ws)
                    task_status.started()
                self._writers += 1
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._ws_writer, ws, nursery.cancel_scope)
                        nursery.start_soon(self._ws_reader, ws)
                        if not initial:
                            nursery.start_soon(self._probe_watchdog)
                finally:
                    self._writers -= 1
                    self._notify()
        except (ConnectError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            if initial and not core.is_open:
                if isinstance(exc, ConnectError):
                    raise
                raise ConnectError(f"WebSocket failed during the Engine.IO handshake: {exc!r}") from None
            if not opened:
                logger.debug("Engine.IO upgrade: WebSocket not opened: %s", exc)
        finally:
            core.websocket_closed(trio.current_time())
            self._after_core()

    async def _websocket_handshake(self, ws: WebSocketConnection) -> None:
        """WebSocket-only session: the first message must be the open packet."""
        core = self.core
        with trio.move_on_after(self._upgrade_timeout):
            while not core.is_open and not core.closed:
                message = await ws.receive()
                core.websocket_message(message, trio.current_time())
                self._after_core()
        if not core.is_open:
            why = self._close_description or self._close_reason or "no open packet in time"
            raise ConnectError(f"Engine.IO handshake over WebSocket failed: {why}")
        self._upgrade_over.set()

    async def _probe_watchdog(self) -> None:
        core = self.core
        with trio.move_on_after(self._upgrade_timeout):
            while core.upgrade_state in ("none", "probing", "pausing") and not core.closed:
                await self._wait_change()
            return
        core.fail_upgrade()
        self._after_core()

    async def _ws_writer(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        core = self.core
        try:
            while True:
                frames, close = core.take_websocket_outgoing()
                for frame in frames:
                    await ws.send(frame)
                if frames:
                    self._notify()  # room in the send buffer
                if close:
                    await ws.close()
                    break
                if core.closed and core.transport != "websocket":
                    break
                if not frames:
                    # Only right after an empty take: packets queued while ws.send was
                    # awaited have already fired their wake-up, so look again first.
                    await self._wait_change()
        except ConnectionClosed:
            pass
        scope.cancel()

    async def _ws_reader(self, ws: WebSocketConnection) -> None:
        core = self.core
        try:
            while True:
                await self._wait_queue_room()
                message = await ws.receive()
                if message == "2":
                    self._n_pings += 1
                core.websocket_message(message, trio.current_time())
                self._after_core()
        except ConnectionClosed:
            pass
        core.websocket_closed(trio.current_time())
        self._after_core()

    async def _shutdown(self) -> None:
        if not self.closed:
            self.core.close()
            self._after_core()
        with trio.move_on_after(self._close_timeout):
            while self._writers:
                await self._wait_change()


@asynccontextmanager
async def connect_engineio(
    url: str,
    *,
    path: str = "/engine.io/",
    transports: Sequence[str] = ("polling", "websocket"),
    upgrade: bool = True,
    headers: Sequence[tuple[str, str]] = (),
    query: Mapping[str, str] | None = None,
    ssl_context: _ssl.SSLContext | None = None,
    open_timeout: float = 20.0,
    upgrade_timeout: float = 10.0,
    close_timeout: float = 5.0,
    max_buffer: int = 1_048_576,
    max_queue: int = 1024,
    max_message_size: int = 16 * 1_048_576,
) -> AsyncIterator[EngineIOClientConnection]:
    """Open an Engine.IO session: ``async with connect_engineio("http://host:port") as eio:``.

    ``url`` is ``http(s)://host:port`` (``ws(s)://`` is accepted too); its path, if
    any, is put in front of ``path``, and its query is merged with ``query``.
    ``transports=("websocket",)`` starts on WebSocket; with both (the default) the
    session starts on polling and upgrades unless ``upgrade=False``. ``headers`` go on
    every HTTP request and the WebSocket handshake.

    ``max_buffer``: bytes queued by ``send()`` before it waits (backpressure).
    ``max_queue``: received messages held before reading pauses (then pings may go
    unanswered: keep reading). ``max_message_size``: largest HTTP body or WebSocket
    message accepted.

    Raises :class:`volleyio.trio.ConnectError` (:class:`EngineIOConnectError` with
    ``status``/``body`` for a refused handshake) when the session cannot be opened.
    Leaving the block closes the session (``1`` is sent).
    """
    conn = EngineIOClientConnection(
        url, path=path, transports=transports, upgrade=upgrade, headers=headers, query=query,
        ssl_context=ssl_context, upgrade_timeout=upgrade_timeout, close_timeout=close_timeout,
        max_buffer=max_buffer, max_queue=max_queue, max_message_size=max_message_size,
    )
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(open_timeout):
                    await conn._open(nursery)
            except trio.TooSlowError:
                raise ConnectError(f"Engine.IO handshake timed out after {open_timeout} s") from None
            try:
                yield conn
            finally:
                with trio.CancelScope(shield=True):
                    await conn._shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf from None
