"""A trio Socket.IO v5 client: namespaces, events, acks, reconnection with backoff.

It drives the sans-I/O :class:`volleyio.socketio.client.SocketIOClient` (namespaces,
acks, send buffer) over :func:`volleyio.trio.connect_engineio` (polling, WebSocket,
upgrade)::

    client = SocketIOClient("http://127.0.0.1:8000", namespaces=("/", "/admin"),
                            auth={"token": "secret"})

    @client.on("news")
    async def news(item):            # sync or async; the return value is the ack
        return "thanks"

    async with client:               # connected to every namespace (or it raises)
        await client.emit("hello", {"a": 1})
        with trio.fail_after(5):
            answer = await client.call("echo", b"\\x00", namespace="/admin")

``connect_socketio(url, **options)`` is the short form when no handler has to be in
place before the first event.

Reserved events, per namespace: ``on("connect")`` (no arguments; after every
(re)connection), ``on("disconnect")`` (the reason: "io server disconnect", "io client
disconnect", "transport close", "transport error", "ping timeout", "parse error") and
``on("connect_error")`` (a :class:`SocketIOConnectError` with ``message``/``data``).
``on("*")`` receives ``(event, *args)`` of events without their own handler.

Handlers: a sync handler is called from the reading task, in arrival order; an async
handler runs as a task in the client's nursery (so it may ``await client.call(...)``), and
the order in which async handlers run is not defined. An exception in a handler is logged
(``volleyio.trio.socketio_client``) and nothing is acked; it does not end the client.
A handler returning ``NO_ACK`` declines to ack; one declaring a keyword-only ``ack``
parameter gets an :class:`~volleyio.trio.Ack` to answer later, from any task.
``call(..., as_list=True)`` returns the ack's argument list as received.

Reconnection (the JS client's rules): when the Engine.IO connection drops ("transport
close", "ping timeout", ...) the client waits ``reconnection_delay * 2**n`` (at most
``reconnection_delay_max``; each delay scaled by a random factor in
``[1 - randomization_factor, 1]``) and reconnects, rejoining every namespace with a fresh
``auth``. A namespace the server disconnected ("io server disconnect") or refused is not
rejoined; when no namespace is left the client closes. After
``reconnection_attempts`` consecutive failed attempts it gives up and closes.

Sending while disconnected: an ``emit``/``call`` is buffered, up to ``buffer_limit``
packets per namespace (default 1,024), and flushed in order once the namespace is
connected again; when the buffer is full :class:`SendBufferFullError` is raised (nothing
is dropped silently). ``emit(..., volatile=True)`` is dropped instead. A packet already
handed to a connection that then dropped is lost, as with the JS client; its pending
``call`` raises :class:`SocketIODisconnectedError`. Once the client is closed, ``emit``
and ``call`` raise :class:`SocketIODisconnectedError`.

Timeouts are trio cancel scopes: ``with trio.fail_after(5): await client.call(...)``; a
cancelled ``call`` forgets its ack (and a still-buffered packet is not sent at all).
"""

from __future__ import annotations

import inspect
import logging
import ssl as _ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Optional, TypeVar, Union, overload

import trio

from ..socketio.client import (
    DEFAULT_BUFFER_LIMIT,
    ClientAckReceived,
    ClientAcksFailed,
    ClientConnected,
    ClientConnectRefused,
    ClientDisconnected,
    ClientEventReceived,
    ClientSocketIOEvent,
    NamespaceState,
    SendBufferFullError,
    SocketIODisconnectedError,
)
from ..socketio.client import SocketIOClient as ClientCore
from ..socketio.client import SocketIOConnectError
from ..socketio.acks import ack_arguments, ack_result
from ..socketio.packets import DEFAULT_MAX_ATTACHMENTS
from ._acks import Ack, wants_ack
from ._client import backoff_delay
from ._engineio_client import EngineIOClientConnection, connect_engineio
from ._errors import BaseExceptionGroup, ConnectError, EngineIOClosed, exit_nursery, unwrap_group

__all__ = [
    "SendBufferFullError",
    "SocketIOClient",
    "SocketIOConnectError",
    "SocketIODisconnectedError",
    "connect_socketio",
]

logger = logging.getLogger("volleyio.trio.socketio_client")

Handler = Callable[..., Any]
_H = TypeVar("_H", bound=Handler)
AuthValue = Optional[Mapping[str, Any]]
Auth = Union[AuthValue, Callable[..., Union[AuthValue, Awaitable[AuthValue]]]]

#: Messages queued for the Engine.IO connection before ``emit`` waits (Engine.IO's own
#: send buffer, 1 MiB, comes on top).
_QUEUE_HIGH = 1024


class _PendingCall:
    __slots__ = ("done", "args", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.args: list[Any] = []
        self.error: BaseException | None = None




class SocketIOClient:
    """A Socket.IO client (see the module docstring). Use it with ``async with``.

    ``url``: ``http(s)://host:port`` (``ws(s)://`` works too). ``namespaces`` to join, each
    with the CONNECT payload ``auth``: a dict, or a callable (sync or async; with no
    argument or with the namespace name) evaluated before every CONNECT, so reconnects
    can send fresh credentials. ``transports``/``upgrade``/``headers``/``query``/
    ``ssl_context`` and any other keyword (``upgrade_timeout``, ``max_buffer``,
    ``max_message_size``...) go to :func:`volleyio.trio.connect_engineio`.
    ``connect_timeout``: seconds for each connection attempt, from the first request until
    every namespace answered. ``close_timeout``: bound on the graceful close.
    ``buffer_limit``: packets kept per namespace while it is not connected.
    ``max_attachments``: binary attachments accepted per packet (socket.io-parser's 10).
    """

    def __init__(
        self,
        url: str,
        *,
        path: str = "/socket.io/",
        namespaces: Sequence[str] = ("/",),
        auth: Auth = None,
        transports: Sequence[str] = ("polling", "websocket"),
        upgrade: bool = True,
        headers: Sequence[tuple[str, str]] = (),
        query: Mapping[str, str] | None = None,
        ssl_context: _ssl.SSLContext | None = None,
        reconnection: bool = True,
        reconnection_attempts: int | None = None,
        reconnection_delay: float = 1.0,
        reconnection_delay_max: float = 5.0,
        randomization_factor: float = 0.5,
        connect_timeout: float = 20.0,
        close_timeout: float = 5.0,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
        **engineio_options: Any,
    ) -> None:
        if isinstance(namespaces, str):
            namespaces = (namespaces,)
        if not namespaces:
            raise ValueError("at least one namespace is needed")
        if not 0.0 <= randomization_factor <= 1.0:
            raise ValueError("randomization_factor must be between 0 and 1")
        if reconnection_attempts is not None and reconnection_attempts < 0:
            raise ValueError("reconnection_attempts must be >= 0 (or None: no limit)")
        self.url = url
        self.path = path
        self.auth = auth
        self.transports = tuple(transports)
        self.reconnection = reconnection
        self.reconnection_attempts = reconnection_attempts
        self.reconnection_delay = reconnection_delay
        self.reconnection_delay_max = max(reconnection_delay_max, reconnection_delay)
        self.randomization_factor = randomization_factor
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._engineio_options: dict[str, Any] = {
            "open_timeout": connect_timeout, "close_timeout": close_timeout, **engineio_options,
            "path": path, "transports": self.transports, "upgrade": upgrade, "headers": tuple(headers),
            "query": query, "ssl_context": ssl_context,
        }
        self._core = ClientCore(buffer_limit=buffer_limit, max_attachments=max_attachments)
        for namespace in namespaces:
            self._core.add_namespace(namespace)
        self._initial_namespaces = tuple(namespaces)
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._pending: dict[tuple[str, int], _PendingCall] = {}
        self._eio: EngineIOClientConnection | None = None
        self._queue: deque[str | bytes] = deque()
        self._queue_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None
        self._run_scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._closed_reason: str | None = None
        self._closing = False
        self._refusals: dict[str, SocketIOConnectError] = {}  # namespace -> latest refusal
        # Handlers that take ``ack=`` (an :class:`Ack`) and answer through it.
        self._ack_handlers: set[Handler] = set()
        self._last_end_reason = "io client disconnect"
        #: Number of Engine.IO connections opened so far (1 + successful reconnects).
        self.connections = 0

    # ------------------------------------------------------------------ registration

    @overload
    def on(self, event: str, namespace: str = "/", handler: None = None) -> Callable[[_H], _H]: ...

    @overload
    def on(self, event: str, namespace: str, handler: _H) -> _H: ...

    @overload
    def on(self, event: str, *, handler: _H) -> _H: ...

    def on(self, event: str, namespace: str = "/", handler: _H | None = None) -> _H | Callable[[_H], _H]:
        """Register ``handler`` for ``event`` in ``namespace``; as a decorator without
        ``handler``. One handler per event and namespace (a new one replaces it)."""

        def register(func: _H) -> _H:
            self._handlers[(namespace, event)] = func
            if event not in ("connect", "disconnect", "connect_error") and wants_ack(func):
                self._ack_handlers.add(func)
            return func

        if handler is not None:
            register(handler)
            return handler
        return register

    # ------------------------------------------------------------------ state

    @property
    def transport(self) -> str | None:
        """``"polling"`` or ``"websocket"`` while an Engine.IO connection is open."""
        eio = self._eio
        return eio.transport if eio is not None else None

    @property
    def engineio(self) -> EngineIOClientConnection | None:
        """The current Engine.IO connection (``None`` while reconnecting)."""
        return self._eio

    def sid(self, namespace: str = "/") -> str | None:
        """The socket id in ``namespace`` while connected (not the Engine.IO sid)."""
        return self._core.sid(namespace)

    def recovered(self, namespace: str = "/") -> bool:
        """Connection state recovery: the current connection of ``namespace`` got the
        previous one's socket id, rooms and data back, and the events missed meanwhile
        were delivered before anything new (the client sends the ``pid`` and offset it
        kept on every reconnect; the server decides)."""
        return self._core.recovered(namespace)

    def is_connected(self, namespace: str = "/") -> bool:
        return self._core.state(namespace) is NamespaceState.CONNECTED

    @property
    def namespaces(self) -> list[str]:
        """Namespaces connected now or to be rejoined."""
        return self._core.active_namespaces()

    @property
    def closed(self) -> bool:
        """True once the client will not (re)connect any more."""
        return self._closed_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._closed_reason

    async def wait_closed(self) -> None:
        """Return once the client closed for good (every namespace ended, reconnection
        disabled or given up, or :meth:`disconnect`)."""
        await self._done.wait()

    # ------------------------------------------------------------------ sending

    async def emit(self, event: str, *args: Any, namespace: str = "/", volatile: bool = False) -> None:
        """Send an event (buffered while the namespace is not connected; see the module
        docstring). Binary values (``bytes``) anywhere in ``args`` go as attachments."""
        self._check_open(namespace)
        self._core.emit(namespace, event, *args, volatile=volatile)
        self._kick()
        await self._backpressure()

    async def call(self, event: str, *args: Any, namespace: str = "/", as_list: bool = False) -> Any:
        """Send an event and wait for the server's ack: ``None`` for an empty ack, the
        value for one argument, a tuple for several; with ``as_list``, the argument list
        exactly as received (``[]`` and ``[None]`` stay apart). Bound it with a cancel
        scope."""
        self._check_open(namespace)
        ack_id = self._core.emit(namespace, event, *args, ack=True)
        assert ack_id is not None
        key = (namespace, ack_id)
        pending = self._pending[key] = _PendingCall()
        try:
            self._kick()
            await pending.done.wait()
        finally:
            if not pending.done.is_set():
                self._pending.pop(key, None)
                self._core.cancel_ack(namespace, ack_id)
        if pending.error is not None:
            raise pending.error
        return ack_result(pending.args, as_list)

    async def disconnect(self, namespace: str | None = None) -> None:
        """Leave ``namespace``, or every namespace and close the client (``None``). The
        server sees "client namespace disconnect"; local hooks get "io client disconnect"."""
        targets = self._core.active_namespaces() if namespace is None else [namespace]
        events: list[ClientSocketIOEvent] = []
        for name in targets:
            events += self._core.disconnect(name)
        self._kick()
        self._dispatch(events)
        if namespace is None or not self._core.active_namespaces():
            await self._close("io client disconnect")

    async def connect_namespace(self, namespace: str) -> None:
        """Join another namespace (or rejoin one that ended) on this connection; it is
        rejoined on reconnect like the others. Returns once it is connected; raises
        :class:`SocketIOConnectError` if the server refuses it."""
        if self.closed:
            raise SocketIODisconnectedError(namespace, self._closed_reason or "closed")
        self._refusals.pop(namespace, None)
        self._core.add_namespace(namespace)
        eio = self._eio
        if eio is not None and self._core.engineio_open and namespace in self._core.namespaces_to_join():
            auth = await self._auth_for(namespace)
            if self._core.engineio_open and namespace in self._core.namespaces_to_join():
                self._core.connect(namespace, auth)
                self._kick()
        while True:
            state = self._core.state(namespace)
            if state is NamespaceState.CONNECTED:
                return
            if state is NamespaceState.ENDED or self.closed:
                refusal = self._refusals.get(namespace)
                if refusal is not None:
                    raise refusal
                raise SocketIODisconnectedError(
                    namespace, self._core.end_reason(namespace) or self._closed_reason or "closed"
                )
            await self._wait_queue_change()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SocketIOClient:
        if self._nursery_manager is not None:
            raise RuntimeError("a SocketIOClient can be entered only once")
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        self._nursery = nursery
        try:
            await nursery.start(self._run)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            leaf = exc
            try:
                await self._nursery_manager.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                leaf = unwrap_group(group)
            except BaseException as other:  # pragma: no cover - defensive
                leaf = other
            if leaf is exc:
                raise
            raise leaf from None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._nursery is not None
        try:
            with trio.CancelScope(shield=True):
                if not self.closed:
                    events: list[ClientSocketIOEvent] = []
                    for name in self._core.active_namespaces():
                        events += self._core.disconnect(name)
                    self._kick()
                    self._dispatch(events, run_async=False)
                    await self._close("io client disconnect")
        finally:
            self._nursery.cancel_scope.cancel()  # handler tasks do not outlive the client
        return await exit_nursery(self._nursery_manager, exc_type, exc, tb)

    # ------------------------------------------------------------------ internals: sending

    def _check_open(self, namespace: str) -> None:
        if self._closed_reason is not None:
            raise SocketIODisconnectedError(namespace, self._closed_reason)
        if self._nursery is None:
            raise RuntimeError("use the client in 'async with' (or connect_socketio) first")

    def _kick(self) -> None:
        """Move what the core produced to the writer's queue."""
        data = self._core.data_to_send()
        if data:
            self._queue.extend(data)
        self._queue_changed.set()
        self._queue_changed = trio.Event()

    async def _wait_queue_change(self) -> None:
        await self._queue_changed.wait()

    async def _backpressure(self) -> None:
        while len(self._queue) > _QUEUE_HIGH and self._eio is not None:
            await self._wait_queue_change()
        await trio.lowlevel.checkpoint()

    async def _writer(self, eio: EngineIOClientConnection) -> None:
        # The one task writing to Engine.IO: the messages of a binary packet must go out
        # back to back, and a cancelled emit must never leave half a packet behind.
        queue = self._queue
        try:
            while True:
                if queue:
                    while queue:
                        await eio.send(queue.popleft())
                        if len(queue) == _QUEUE_HIGH // 2:
                            self._kick()
                    self._kick()  # drained: wake whoever waits for that
                await self._wait_queue_change()
        except EngineIOClosed:
            pass

    # ------------------------------------------------------------------ internals: connection

    async def _auth_for(self, namespace: str) -> dict[str, Any] | None:
        auth = self.auth
        if callable(auth):
            try:
                takes_namespace = len(inspect.signature(auth).parameters) >= 1
            except (TypeError, ValueError):  # pragma: no cover - builtins without signature
                takes_namespace = False
            value = auth(namespace) if takes_namespace else auth()
            if inspect.isawaitable(value):
                value = await value
            auth = value
        if auth is None:
            return None
        if not isinstance(auth, Mapping):
            raise TypeError(f"auth must be a mapping (a JSON object), not {type(auth).__name__}")
        return dict(auth)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then reconnect with backoff until closed."""
        final_reason = "io client disconnect"
        try:
            with trio.CancelScope() as scope:
                self._run_scope = scope
                opened, reason = await self._first_session(task_status)  # raises if it cannot
                failures = 0
                while True:
                    if self._closing:
                        break
                    if not self._core.active_namespaces():
                        final_reason = reason
                        break
                    if not self.reconnection:
                        final_reason = reason
                        break
                    if self.reconnection_attempts is not None and failures >= self.reconnection_attempts:
                        final_reason = "reconnect failed"
                        break
                    delay = backoff_delay(
                        failures + 1, self.reconnection_delay, self.reconnection_delay_max, 2.0,
                        self.randomization_factor,
                    )
                    logger.info("Socket.IO connection to %s lost (%s); reconnecting in %.2f s",
                                self.url, reason, delay)
                    await trio.sleep(delay)
                    if self._closing:
                        break
                    try:
                        opened, reason = await self._session(None)
                    except (ConnectError, EngineIOClosed, OSError) as exc:
                        opened, reason = False, str(exc)
                    except Exception as exc:  # e.g. the auth callable failed: try again later
                        logger.exception("Socket.IO reconnection attempt failed")
                        opened, reason = False, repr(exc)
                    failures = 0 if opened else failures + 1
        finally:
            self._finish(final_reason)

    async def _first_session(self, task_status: trio.TaskStatus[None]) -> tuple[bool, str]:
        """The first connection. A server that cannot be reached (refused TCP connection,
        HTTP error, timeout) is a :class:`SocketIOConnectError` (``refused=False``, the
        transport's error as its cause), reported to the ``connect_error`` handlers and,
        with ``reconnection`` on, retried with the reconnection backoff as the JS client
        does (up to ``reconnection_attempts`` retries); the last one is raised. A
        namespace refused by the server is raised at once."""
        failures = 0
        while True:
            try:
                return await self._session(task_status)
            except (ConnectError, EngineIOClosed, OSError) as exc:
                error = SocketIOConnectError(
                    self._initial_namespaces[0], f"cannot reach {self.url} ({exc})", refused=False
                )
                error.__cause__ = exc
                for namespace in self._initial_namespaces:
                    self._hook(namespace, "connect_error", (error,), True)
                failures += 1
                exhausted = self.reconnection_attempts is not None and failures > self.reconnection_attempts
                if not self.reconnection or exhausted or self._closing:
                    raise error from exc
                delay = backoff_delay(
                    failures, self.reconnection_delay, self.reconnection_delay_max, 2.0, self.randomization_factor
                )
                logger.info("Socket.IO connection to %s failed (%s); retrying in %.2f s", self.url, exc, delay)
                await trio.sleep(delay)

    async def _session(self, task_status: trio.TaskStatus[None] | None) -> tuple[bool, str]:
        """One Engine.IO connection. Returns ``(opened, reason it ended)``. The first
        session (``task_status`` given) raises instead when the client cannot connect."""
        opened = False
        reason = "transport close"
        deadline = trio.current_time() + self.connect_timeout
        # Credentials first: a failing auth callable should not cost a connection.
        auths = {namespace: await self._auth_for(namespace) for namespace in self._core.namespaces_to_join()}
        try:
            async with connect_engineio(self.url, **self._engineio_options) as eio:
                opened = True
                self.connections += 1
                reason = await self._use(eio, auths, deadline, task_status)
            if reason == "connect timeout" and task_status is not None:
                raise ConnectError(f"Socket.IO connection timed out after {self.connect_timeout} s")
        finally:
            self._eio = None
            self._queue.clear()
            self._dispatch(self._core.engineio_closed(reason))
            self._kick()
        return opened, reason

    async def _use(
        self, eio: EngineIOClientConnection, auths: dict[str, dict[str, Any] | None], deadline: float,
        task_status: trio.TaskStatus[None] | None,
    ) -> str:
        """Join the namespaces (until ``deadline``: after it, "connect timeout"), then
        read until the connection ends; returns the reason it ended."""
        core = self._core
        while missing := [ns for ns in core.namespaces_to_join() if ns not in auths]:
            for namespace in missing:  # added by connect_namespace() meanwhile
                auths[namespace] = await self._auth_for(namespace)
        self._queue.clear()
        core.engineio_opened()
        self._eio = eio
        for namespace in core.namespaces_to_join():
            core.connect(namespace, auths[namespace])
        self._kick()
        refusal: SocketIOConnectError | None = None
        reason = "transport close"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, eio)
            waiting = True
            while True:
                if waiting and self._all_answered():
                    waiting = False
                    deadline = float("inf")
                    if task_status is not None:
                        refusal = next(
                            (self._refusals[ns] for ns in self._initial_namespaces if ns in self._refusals),
                            None,
                        )
                        if refusal is not None:
                            break
                        task_status.started()
                        # From now on only _close() (called by __aexit__, shielded) ends the
                        # connection, gracefully: a cancellation from outside the client
                        # would cut Engine.IO off without its close handshake.
                        assert self._run_scope is not None
                        self._run_scope.shield = True
                if not core.active_namespaces():
                    reason = self._last_end_reason
                    break
                deadline_passed = True
                # Not a cancel scope around the whole connection: cancelling Engine.IO's
                # tasks would skip its graceful close.
                try:
                    with trio.move_on_at(deadline):
                        message = await eio.receive()
                        deadline_passed = False
                    if deadline_passed:
                        reason = "connect timeout"
                        break
                except EngineIOClosed as exc:
                    reason = exc.reason
                    break
                self._dispatch(core.receive(message))
                self._kick()
                if core.close_reason is not None:
                    reason = core.close_reason
                    break
            if core.close_reason is None:
                await self._drain(eio)  # the last 41s must go out before the close
            nursery.cancel_scope.cancel()
        if not eio.closed:
            with trio.CancelScope(shield=True):
                await eio.close()
        if refusal is not None:
            raise refusal
        return reason

    async def _drain(self, eio: EngineIOClientConnection) -> None:
        """Wait (bounded) until Engine.IO took everything we queued *into a request or
        frame*. Closing before that would put the final ``41`` and Engine.IO's ``1`` in
        one polling payload, and Node handles Socket.IO packets a tick late
        (``process.nextTick``): the server would then report "transport close" instead
        of "client namespace disconnect". The JS client also closes only after "drain"."""
        with trio.move_on_after(self.close_timeout):
            while self._queue and not eio.closed:
                await self._wait_queue_change()
            while eio.core.buffered_amount and not eio.closed:
                await trio.sleep(0.005)

    def _all_answered(self) -> bool:
        return all(
            self._core.state(ns) in (NamespaceState.CONNECTED, NamespaceState.ENDED, NamespaceState.LEAVING)
            for ns in self._core.namespaces
        )

    async def _close(self, reason: str) -> None:
        """Close for good: flush (41s), close Engine.IO, stop reconnecting. Safe to call
        again, also after a cancelled call."""
        if self._closed_reason is None:
            self._closed_reason = reason
        self._closing = True
        try:
            eio = self._eio
            if eio is not None and not eio.closed:
                await self._drain(eio)
                with trio.move_on_after(self.close_timeout):
                    await eio.close()
        finally:
            if self._run_scope is not None:
                self._run_scope.cancel()
        await self._done.wait()

    def _finish(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        final = self._closed_reason
        for (namespace, _), pending in list(self._pending.items()):
            pending.error = SocketIODisconnectedError(namespace, final)
            pending.done.set()
        self._pending.clear()
        for name in self._core.active_namespaces():
            self._core.disconnect(name)  # drops buffers; their calls failed just above
        self._core.data_to_send()
        self._queue.clear()
        self._done.set()
        self._kick()

    # ------------------------------------------------------------------ internals: dispatch

    def _dispatch(self, events: list[ClientSocketIOEvent], run_async: bool = True) -> None:
        for event in events:
            if isinstance(event, ClientEventReceived):
                self._on_event(event)
            elif isinstance(event, ClientAckReceived):
                pending = self._pending.pop((event.namespace, event.ack_id), None)
                if pending is not None:
                    pending.args = event.args
                    pending.done.set()
            elif isinstance(event, ClientAcksFailed):
                for ack_id in event.ack_ids:
                    pending = self._pending.pop((event.namespace, ack_id), None)
                    if pending is not None:
                        pending.error = SocketIODisconnectedError(event.namespace, event.reason)
                        pending.done.set()
            elif isinstance(event, ClientConnected):
                self._hook(event.namespace, "connect", (), run_async)
            elif isinstance(event, ClientDisconnected):
                if event.final:
                    self._last_end_reason = event.reason
                self._hook(event.namespace, "disconnect", (event.reason,), run_async)
            elif isinstance(event, ClientConnectRefused):
                error = SocketIOConnectError(event.namespace, event.message, event.data)
                self._last_end_reason = "connect error"
                self._refusals[event.namespace] = error
                self._hook(event.namespace, "connect_error", (error,), run_async)

    def _hook(self, namespace: str, name: str, args: tuple[Any, ...], run_async: bool) -> None:
        handler = self._handlers.get((namespace, name))
        if handler is not None:
            self._invoke(handler, args, None, run_async)

    def _on_event(self, event: ClientEventReceived) -> None:
        handler = self._handlers.get((event.namespace, str(event.event)))
        args: tuple[Any, ...] = tuple(event.args)
        if handler is None:
            handler = self._handlers.get((event.namespace, "*"))
            args = (event.event, *event.args)
        if handler is None:
            logger.debug("no handler for event %r in namespace %s", event.event, event.namespace)
            return
        self._invoke(handler, args, event, True)

    def _ack_for(self, event: ClientEventReceived) -> Ack:
        if event.ack_id is None:
            return Ack(None)
        core, namespace, sid, ack_id = self._core, event.namespace, event.sid, event.ack_id

        def send(args: tuple[Any, ...]) -> None:
            core.ack(namespace, sid, ack_id, *args)
            self._kick()

        return Ack(send)

    def _invoke(
        self, handler: Handler, args: tuple[Any, ...], event: ClientEventReceived | None, run_async: bool
    ) -> None:
        try:
            if event is not None and handler in self._ack_handlers:
                result = handler(*args, ack=self._ack_for(event))
                event = None  # answered through the Ack, never by the return value
            else:
                result = handler(*args)
        except Exception:
            logger.exception("Socket.IO handler %r failed", handler)
            return
        if inspect.isawaitable(result):
            if run_async and self._nursery is not None and not self._done.is_set():
                self._nursery.start_soon(self._await_handler, handler, result, event)
            elif inspect.iscoroutine(result):
                result.close()  # the client is closing: async hooks are not run any more
            return
        self._answer(event, result)

    async def _await_handler(
        self, handler: Handler, awaitable: Awaitable[Any], event: ClientEventReceived | None
    ) -> None:
        try:
            result = await awaitable
        except Exception:
            logger.exception("Socket.IO handler %r failed", handler)
            return
        self._answer(event, result)

    def _answer(self, event: ClientEventReceived | None, result: Any) -> None:
        if event is None or event.ack_id is None:
            return
        answer = ack_arguments(result)
        if answer is None:
            return  # NO_ACK: the handler declines to answer
        try:
            self._core.ack(event.namespace, event.sid, event.ack_id, *answer)
        except ValueError:
            logger.exception("cannot send the ack of %r (not JSON-serializable?)", event.event)
            return
        self._kick()


@asynccontextmanager
async def connect_socketio(url: str, **options: Any) -> AsyncIterator[SocketIOClient]:
    """``async with connect_socketio(url, **options) as client:``: a connected
    :class:`SocketIOClient` (options as its constructor's)."""
    async with SocketIOClient(url, **options) as client:
        yield client
