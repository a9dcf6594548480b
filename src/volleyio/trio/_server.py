"""``serve()``: the trio WebSocket server with its HTTP front door on h11."""

from __future__ import annotations

import errno
import inspect
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, Union

import h11
import trio

from .. import websocket as _ws
from ._connection import BatchFlusher, Limits, MessageHandler, WebSocketConnection
from ._errors import BaseExceptionGroup, ConnectionClosed, unwrap_group
from ._http import Request, Response
from ._http_loop import HttpConnection, Takeover, render_h11_response, send_bytes, serve_connection
from ._keepalive import Keepalive

logger = logging.getLogger("volleyio.trio.server")

AsyncHandler = Callable[[WebSocketConnection], Awaitable[Any]]
#: ``async def handler(ws)``, or a :class:`MessageHandler` (callbacks, no task per message).
Handler = Union[AsyncHandler, MessageHandler]
#: ``process_request``: ``async def`` or a plain function; returns a Response or None.
ProcessRequest = Callable[[Request], Union[Awaitable[Union[Response, None]], Response, None]]
SelectSubprotocol = Callable[[Request, list[str]], Union[str, None]]

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class HttpMount(Protocol):
    """An HTTP application mounted on a path prefix of the front door (``serve(mounts=...)``).

    Every request whose path starts with the prefix (the longest matching prefix wins)
    is handed to ``handle_request(request, http)`` by the server's one HTTP/1.1
    connection loop (:mod:`volleyio.trio._http_loop`), which has already read and
    checked the head (limits, framing, HTTP version) and handles keep-alive and errors.
    The mount answers through ``http``, an :class:`~volleyio.trio.HttpConnection`:
    ``await http.respond(status, headers, body)`` (``Content-Length`` framing,
    ``Connection`` and ``nosniff`` handled), ``await http.read_body(limit)`` for a
    request body, or takes the connection over (a WebSocket upgrade) with
    ``leftover = http.detach()`` and returns a coroutine serving the rest of the
    connection. ``http.head`` is the parsed head (bytes, h11's normalisation).

    ``run`` (optional) holds the mount's background tasks (timers);
    ``WebSocketServer.run`` starts it with ``nursery.start`` before accepting, and it
    is cancelled at shutdown. A static page is as small as::

        class Hello:
            async def handle_request(self, request, http):
                await http.respond(200, [("Content-Type", "text/plain")], b"hello",
                                   head_only=request.method == "HEAD")
    """

    def handle_request(self, request: Request, http: HttpConnection) -> Awaitable[Takeover | None]: ...


class WebSocketServer:
    """A running server; handed to ``task_status.started`` by :func:`serve`."""

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler] | None,
        *,
        ssl_context: _ssl.SSLContext | None = None,
        origins: str | Sequence[str] | None = None,
        subprotocols: Sequence[str] = (),
        select_subprotocol: SelectSubprotocol | None = None,
        process_request: ProcessRequest | None = None,
        extensions: Sequence[Any] = (),
        open_timeout: float = 10.0,
        limits: Limits | None = None,
        mounts: Mapping[str, HttpMount] | None = None,
    ) -> None:
        self.handler = handler
        #: ``{path prefix: mount}``; the longest matching prefix wins.
        self.mounts: dict[str, HttpMount] = dict(mounts or {})
        self._mount_order = sorted(self.mounts.items(), key=lambda item: len(item[0]), reverse=True)
        self.ssl_context = ssl_context
        # A string is one origin or "*"; the core reads either form.
        self.origins = origins if origins is None or isinstance(origins, str) else list(origins)
        self.subprotocols = list(subprotocols)
        self.select_subprotocol = select_subprotocol
        self.process_request = process_request
        self.extension_factories = list(extensions)
        self.open_timeout = open_timeout
        self.limits = limits or Limits()
        #: The open WebSocket connections.
        self.connections: set[WebSocketConnection] = set()
        self.listeners: list[trio.SocketListener] = []
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._keepalive = Keepalive(self.limits.ping_interval, self.limits.ping_timeout)
        self._batch = BatchFlusher()
        #: Count of TCP connections being handled (handshake or open).
        self.active_tasks = 0

    @property
    def port(self) -> int:
        """The port of the first listener (useful with ``port=0``)."""
        return int(self.listeners[0].socket.getsockname()[1])

    @property
    def sockets(self) -> list[Any]:
        return [listener.socket for listener in self.listeners]

    def shutdown(self) -> None:
        """Stop accepting and close every connection with 1001 (bounded by the close timeout)."""
        if self._scope is not None:
            self._scope.cancel()

    # ---------------------------------------------------------------- accept loop

    async def run(self, listeners: list[trio.SocketListener], task_status: Any) -> None:
        self.listeners = listeners
        with trio.CancelScope() as self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for mount in self.mounts.values():
                        await nursery.start(_start_mount, mount)
                    for listener in listeners:
                        nursery.start_soon(self._accept_loop, listener, nursery)
                    nursery.start_soon(self._keepalive.run)
                    nursery.start_soon(self._batch.run)
                    task_status.started(self)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    logger.warning("accept: %s; retrying in 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(self._handle_tcp, stream)

    async def _handle_tcp(self, tcp: trio.SocketStream) -> None:
        self.active_tasks += 1
        try:
            stream: trio.abc.Stream = tcp
            try:
                tcp.setsockopt(6, 1, 1)  # TCP_NODELAY (trio sets it too; harmless)
            except OSError:
                pass
            if self.ssl_context is not None:
                stream = trio.SSLStream(tcp, self.ssl_context, server_side=True, https_compatible=True)
                handshook = False
                with trio.move_on_after(self.open_timeout):
                    try:
                        await stream.do_handshake()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        return
                    handshook = True
                if not handshook:
                    return
            # The HTTP/1.1 loop serves the requests; a WebSocket upgrade (or another
            # door's takeover) comes back as the coroutine serving the rest of the
            # connection, run once the loop's frame and state are gone.
            takeover = await serve_connection(
                stream, self, open_timeout=self.open_timeout, secure=self.ssl_context is not None
            )
            if takeover is not None:
                await takeover
        except trio.Cancelled:
            raise
        except BaseException as exc:  # noqa: BLE001 - one peer never disturbs the others
            if isinstance(exc, BaseExceptionGroup):
                _, rest = exc.split(trio.Cancelled)
                if rest is None:
                    raise  # only cancellation: let the cancel scope that caused it catch it
            leaf = unwrap_group(exc)
            if not isinstance(leaf, (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ConnectionClosed)):
                logger.exception("connection task failed")
        finally:
            self.active_tasks -= 1
            with trio.CancelScope(shield=True):
                try:
                    await trio.aclose_forcefully(tcp)
                except BaseException:  # noqa: BLE001
                    pass

    def mount_for(self, path: str) -> HttpMount | None:
        """The mount whose prefix ``path`` starts with (longest prefix first)."""
        for prefix, mount in self._mount_order:
            if path.startswith(prefix):
                return mount
        return None

    def handle_request(self, request: Request, http: HttpConnection) -> Awaitable[Takeover | None]:
        """The dispatch of the connection loop: a mount, a page from ``process_request``,
        a WebSocket route, or an error (404/426/403/...). (A plain function returning the
        door's coroutine: no coroutine layer of its own per request.)"""
        if self._mount_order:
            mount = self.mount_for(request.path)
            if mount is not None:
                return mount.handle_request(request, http)
        return self._handle_route(request, http)

    async def _handle_route(self, request: Request, http: HttpConnection) -> Takeover | None:
        head = http.head
        assert head is not None
        with trio.move_on_after(self.open_timeout) as scope:
            outcome = await self._accept_or_reject(request, head.h11_request())
        if scope.cancelled_caught:
            return None  # process_request took too long: close
        if isinstance(outcome, Response):
            await http.respond_page(outcome, head_only=request.method == "HEAD")
            return None
        handler, switching, proto = outcome
        leftover = http.detach()
        return self._serve_websocket(http.stream, request, handler, switching, proto, leftover)

    async def _serve_websocket(
        self,
        stream: trio.abc.Stream,
        request: Request,
        handler: Handler,
        switching: bytes,
        proto: _ws.WebSocketConnection,
        leftover: bytes,
    ) -> None:
        with trio.move_on_after(self.open_timeout) as scope:
            if not await send_bytes(stream, switching):
                return
        if scope.cancelled_caught:
            return
        ws = WebSocketConnection(
            stream,
            client=False,
            limits=self.limits,
            proto=proto,
            request=request,
            initial_data=leftover,
        )
        # Drop what the handshake needed: this frame lives as long as the connection.
        del leftover, switching, scope, proto
        # The reader runs as a sibling task in the server's nursery (no nursery per
        # connection: an idle connection costs two parked tasks and this object).
        assert self._nursery is not None
        self.connections.add(ws)
        self._keepalive.add(ws)
        ws._nursery = self._nursery
        try:
            if isinstance(handler, MessageHandler):
                await ws._serve_handler(handler)
            else:
                await self._run_handler(ws, handler)
        finally:
            self.connections.discard(ws)
            self._keepalive.discard(ws)
            if not ws._transport_closed:
                # Cancelled (server shutdown): close with 1001, bounded by the close timeout.
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(self.limits.close_timeout):
                        try:
                            await ws._send_close(1001, "going away")
                            await ws.drain_until_closed()
                        except ConnectionClosed:
                            pass
                    await ws._close_transport()
            ws._handler_closed()

    async def _run_handler(self, ws: WebSocketConnection, handler: AsyncHandler) -> None:
        if ws._raw is not None:
            ws._batch = self._batch
        ws._start_reader()
        await trio.lowlevel.checkpoint()  # let the reader start
        code, reason = 1000, ""
        try:
            await handler(ws)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - the handler's bug closes this connection with 1011
            logger.exception("WebSocket handler failed")
            code, reason = 1011, "internal error"
        await ws.close(code, reason)

    def _route(self, path: str) -> Handler | None:
        if self.handler is None:
            return None
        if isinstance(self.handler, Mapping):
            return self.handler.get(path)
        return self.handler

    async def _accept_or_reject(
        self, request: Request, h11_request: h11.Request
    ) -> Response | tuple[Handler, bytes, _ws.WebSocketConnection]:
        """Route, run the request hook, then let the core validate the upgrade."""
        handler = self._route(request.path)
        if self.process_request is not None:
            try:
                answer = self.process_request(request)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception:  # noqa: BLE001
                logger.exception("process_request failed")
                return Response.text(500)
            if answer is not None:
                return answer
        if handler is None:
            return Response.text(404)
        subprotocols: Any = self.subprotocols
        if self.select_subprotocol is not None:
            select = self.select_subprotocol
            subprotocols = lambda offered: select(request, list(offered))  # noqa: E731
        origins: Any = self.origins
        result = _ws.server_handshake(
            h11_request,
            subprotocols=subprotocols,
            origins=origins,
            extensions=self.extension_factories,
            max_message_size=self.limits.max_message_size,
            max_fragments=self.limits.max_fragments,
            stream_messages=True,
        )
        if isinstance(result, _ws.HandshakeRejected):
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in result.response.headers.raw_items()]
            return Response(result.response.status_code, result.body, headers)
        return handler, render_h11_response(result.response), result.connection


async def _start_mount(mount: HttpMount, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    run = getattr(mount, "run", None)
    if run is None:
        task_status.started()
        return
    await run(task_status=task_status)


async def serve(
    handler: Handler | Mapping[str, Handler] | None,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: _ssl.SSLContext | None = None,
    origins: str | Sequence[str] | None = None,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SelectSubprotocol | None = None,
    process_request: ProcessRequest | None = None,
    extensions: Sequence[Any] = (),
    compression: str | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    max_message_size: int = 1_048_576,
    max_fragments: int = 4096,
    max_queue: int = 16,
    write_limit: int = 64 * 1024,
    backlog: int | None = None,
    mounts: Mapping[str, HttpMount] | None = None,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections until cancelled (or ``server.shutdown()``).

    ``handler`` is ``async def handler(ws)``, a :class:`MessageHandler` instance
    (callbacks run by the connection's reader: the cheapest per message), or a
    mapping ``{path: handler}`` of either; other
    paths get 404 and non-WebSocket requests on a WebSocket path 426. Use with
    ``server = await nursery.start(serve, handler, "127.0.0.1", 0)``. When the
    handler returns the connection is closed with 1000; when it raises, with 1011;
    on shutdown every client gets 1001, bounded by ``close_timeout``.

    ``origins``: None = same-origin when an Origin header is present (requests
    without Origin are accepted); a list = exact allow-list; ``"*"`` allows any
    (so does a list containing ``"*"``).
    ``process_request(request)`` runs before the upgrade; it may be ``async def`` or a
    plain function (called, and awaited when it returns an awaitable). Returning a
    :class:`Response` answers the request itself (plain HTTP, or rejecting an
    unauthenticated upgrade); ``None`` goes on with the upgrade. If it raises, the
    request gets 500 and the exception is logged.
    """
    extensions = list(extensions)
    if compression == "deflate":
        from ..websocket.deflate import ServerPerMessageDeflateFactory

        extensions.append(ServerPerMessageDeflateFactory())
    elif compression is not None:
        raise ValueError(f"unsupported compression {compression!r} (None or 'deflate')")
    limits = Limits(
        max_message_size=max_message_size,
        max_fragments=max_fragments,
        max_queue=max_queue,
        queue_low=max(max_queue // 4, 0),
        write_high=write_limit,
        write_low=write_limit // 4,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    server = WebSocketServer(
        handler,
        ssl_context=ssl_context,
        origins=origins,
        subprotocols=subprotocols,
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        extensions=extensions,
        open_timeout=open_timeout,
        limits=limits,
        mounts=mounts,
    )
    kwargs: dict[str, Any] = {"host": host}
    if backlog is not None:
        kwargs["backlog"] = backlog
    listeners = await trio.open_tcp_listeners(port, **kwargs)
    try:
        await server.run(listeners, task_status)
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf from None
