"""HTTP long-polling requests of an Engine.IO endpoint (and the start of its upgrades).

The connection loop (:mod:`volleyio.trio._http_loop`) reads and checks each request and
keeps the connection alive; :func:`handle_request` turns it into a core request and
carries out the core's answer: a response, a parked GET, a POST body to read, or a
WebSocket to accept (handed to :mod:`volleyio.trio._engineio_websocket`).

A GET with nothing to send is parked: its task waits for the socket to become readable
and the core's poll waker cancels that wait (one task, no watcher), so a client that goes
away is noticed at once (``poll_cancelled``, the session ends). A woken GET yields to the
scheduler once before taking its answer, so what the handlers produce for one POST leaves
in one GET. POST bodies are streamed: a declared ``Content-Length`` above ``maxPayload``
is refused before reading (413), a body that grows past it is refused while streaming
(413), a truncated body or one idle for more than
:data:`~volleyio.trio._http_loop.BODY_IDLE_TIMEOUT` seconds ends the request
(``post_aborted``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

import trio

from .. import websocket as _ws
from ..engineio.server import (
    AcceptWebSocket,
    HttpRequest,
    HttpResponse,
    PollParked,
    ReadBody,
    RefuseWebSocket,
)
from ._engineio_session import EngineIORequest
from ._engineio_websocket import serve_websocket
from ._http import Request
from ._http_loop import TOO_LARGE, HttpConnection, Takeover

if TYPE_CHECKING:
    from ._engineio_server import EngineIOApp

#: Bytes of a pipelined next request kept while a GET is parked (the watcher stops
#: reading beyond that; browsers do not pipeline, so this is only a bound).
_MAX_STASH = 64 * 1024
#: Bounds the answers written at shutdown (parked GETs).
_SHUTDOWN_WRITE_TIMEOUT = 2.0


async def handle_request(app: EngineIOApp, request: Request, http: HttpConnection) -> Takeover | None:
    """Serve one request of the endpoint; returns the coroutine running an accepted
    WebSocket (the rest of the connection), else None."""
    head = http.head
    assert head is not None
    method = request.method
    path, _, query_string = request.target.partition("?")
    headers: dict[str, str] = {}
    upgrade = False
    raw_name = raw_value = b""
    for raw_name, raw_value in head.headers:
        name = raw_name.decode("latin-1")
        if name not in headers:
            headers[name] = raw_value.decode("latin-1")
        if name == "upgrade" and b"websocket" in [t.strip(b" \t").lower() for t in raw_value.split(b",")]:
            upgrade = True
    query = _parse_query(query_string)
    core_request = HttpRequest(method, path, query, headers, websocket_upgrade=upgrade)
    head_only = method == "HEAD"

    accepted: _ws.HandshakeAccepted | None = None
    if upgrade:
        handshake = _ws.server_handshake(
            head.h11_request(),
            origins="*",  # the Engine.IO core checks origins itself
            extensions=http.server.extension_factories,
            max_message_size=app.config.max_payload,
            max_fragments=app.limits.max_fragments,
            stream_messages=True,
        )
        if isinstance(handshake, _ws.HandshakeRejected):
            response = handshake.response
            await http.respond(
                response.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw_items()],
                handshake.body,
                close=True,
            )
            return None
        accepted = handshake
        del handshake

    sid = query.get("sid")
    forwarder = app.forwarder
    if sid and forwarder is not None and not forwarder.owns(sid):
        # Another node of the cluster owns this session: forward through Redis.
        http.head = None
        if accepted is not None:
            return await forwarder.forward_websocket(http, request, accepted, path, query, headers)
        await forwarder.forward_polling(http, method, path, query, headers)
        return None
    # A handshake (or an error answer to one): keep a compact record for the session.
    record = None if sid else EngineIORequest(head.raw, http.remote, http.secure)
    del head
    http.head = None  # a parked GET keeps no parsed head alive
    # A Connected event picks the handshake record up.
    outcome = app.drive(app.core.handle_request, core_request, trio.current_time(), handshake=record)

    # A parked GET lives long: its frame keeps none of the request's pieces.
    del headers, core_request, query, path, query_string, raw_name, raw_value
    if isinstance(outcome, HttpResponse):
        if sid:
            app._flushed(sid)  # a GET answered at once took packets from the buffer
        await _respond(app, http, outcome, head_only, close=upgrade)
        return None
    if isinstance(outcome, PollParked):
        await http.discard_body(app.config.max_payload)
        del request, accepted
        await _park(app, http, outcome.sid, head_only)
        return None
    if isinstance(outcome, ReadBody):
        del request, accepted
        await _post(app, http, outcome, head_only)
        return None
    if isinstance(outcome, RefuseWebSocket):
        await http.respond_raw(outcome.raw_response())
        return None
    assert isinstance(outcome, AcceptWebSocket)
    if accepted is None:  # pragma: no cover - the core accepts upgrade requests only
        return None
    leftover = http.detach()
    # Run by the connection's task once the loop is gone (its frames would live as long
    # as the WebSocket otherwise).
    return serve_websocket(app, http.stream, request, outcome, accepted, leftover, http.server)


async def _respond(
    app: EngineIOApp, http: HttpConnection, response: HttpResponse, head_only: bool, close: bool = False
) -> None:
    """Write a core response (it frames every body with Content-Length); the connection
    stays open for the next request unless the request, ``close`` or a shutdown says no."""
    await http.respond(
        response.status, response.headers, response.body, head_only=head_only, close=close or app._shutting_down
    )


async def _post(app: EngineIOApp, http: HttpConnection, outcome: ReadBody, head_only: bool) -> None:
    sid = outcome.sid
    session = app._sessions.get(sid)
    try:
        if session is not None and app._on_event is None:
            # Backpressure: a full inbound queue stops us reading this client's body.
            await session._wait_room()
        body = await http.read_body(outcome.limit)
    except BaseException:
        app.core.post_aborted(sid, trio.current_time())
        app._pump_events()
        raise
    now = trio.current_time()
    if isinstance(body, str):
        if body == TOO_LARGE:
            response = app.core.post_too_large(sid, now)
            app._pump_events()
            await http.respond(response.status, response.headers, response.body, head_only=head_only, close=True)
            return
        app.core.post_aborted(sid, now)  # truncated, malformed or stalled: no answer
        app._pump_events()
        return
    response = app.drive(app.core.post_body, sid, body, now)
    await _respond(app, http, response, head_only)


async def _park(app: EngineIOApp, http: HttpConnection, sid: str, head_only: bool) -> None:
    """Wait for a parked GET's answer while watching the client, then answer it.

    One task does both on plain TCP: it waits until the socket is readable, and the
    core's poll waker cancels that wait. Once woken it yields to the scheduler once
    before taking the answer, so what the other tasks woken in the same round (the
    session's handler fed by a POST, say) send goes out in this one response.
    What it reads meanwhile (a pipelined next request) is given back to ``http``.
    """
    stream = http.stream
    raw = http.raw
    core = app.core
    waiter = _PollWaiter()
    core.set_poll_waker(sid, waiter.wake)
    stash = b""
    gone = False
    answer: HttpResponse | None = None
    try:
        if raw is None:
            stash, gone, answer = await _park_stream(app, stream, sid, waiter)
        else:
            while True:
                answer = core.poll_ready(sid, trio.current_time())
                if answer is not None:
                    break
                with trio.CancelScope() as scope:
                    waiter.scope = scope
                    if not waiter.woken:
                        await trio.lowlevel.wait_readable(raw)
                waiter.scope = None
                if waiter.woken:
                    waiter.woken = False
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    continue
                if len(stash) >= _MAX_STASH:
                    # Pipelining beyond the bound: stop watching, only the waker counts.
                    with trio.CancelScope() as scope:
                        waiter.scope = scope
                        if not waiter.woken:
                            await trio.sleep_forever()
                    waiter.scope = None
                    waiter.woken = False
                    continue
                try:
                    data = raw.recv(16384)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    gone = True
                    break
                stash += data  # a pipelined next request: served after this one
    finally:
        waiter.scope = None
        if answer is None:
            final = _end_unanswered(app, sid, gone)
            if final is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(_SHUTDOWN_WRITE_TIMEOUT):
                    await http.respond(final.status, final.headers, final.body, head_only=head_only, close=True)
            app._pump_events()
    if answer is None:
        return  # the client left
    await _respond(app, http, answer, head_only)
    app._flushed(sid)
    if stash:
        http.unread(stash)

def _end_unanswered(app: EngineIOApp, sid: str, gone: bool) -> HttpResponse | None:
    """A parked GET ends without its answer: the client left (``gone``: the session
    ends), or the task was cancelled from outside (server shutdown: the session is
    closed and its final ``1`` answer, if any, is returned for the caller to write,
    boundedly; the caller pumps the events afterwards)."""
    core = app.core
    now = trio.current_time()
    if gone:
        core.poll_cancelled(sid, now)
        return None
    core.close(sid, now)
    app._pump_events()
    final = core.poll_ready(sid, now)
    if final is None:
        core.poll_cancelled(sid, now)
    return final


class _ByteSource(Protocol):
    """What :func:`_park_stream` watches: a stream (TLS) or the ASGI driver's ``receive``
    adapter; ``b""`` means the client went away."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


async def _park_stream(
    app: EngineIOApp, stream: _ByteSource, sid: str, waiter: _PollWaiter
) -> tuple[bytes, bool, HttpResponse | None]:
    """:func:`_park` for streams without a raw socket (TLS, and ``volleyio.asgi``'s
    ``receive``): a second task watches."""
    core = app.core
    stash = bytearray()
    gone = False
    answer: HttpResponse | None = None

    async def watch(cancel_scope: trio.CancelScope) -> None:
        nonlocal gone
        while len(stash) < _MAX_STASH:
            try:
                data = await stream.receive_some(16384)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                gone = True
                cancel_scope.cancel()
                return
            stash.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        while True:
            answer = core.poll_ready(sid, trio.current_time())
            if answer is not None:
                break
            with trio.CancelScope() as scope:
                waiter.scope = scope
                if not waiter.woken:
                    await trio.sleep_forever()
            waiter.scope = None
            if waiter.woken:
                waiter.woken = False
                await trio.lowlevel.cancel_shielded_checkpoint()
        nursery.cancel_scope.cancel()
    return bytes(stash), gone, answer


# ------------------------------------------------------------------ WebSocket transport


class _PollWaiter:
    """The poll waker of one parked GET: cancels the wait of the task that parked it."""

    __slots__ = ("scope", "woken")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.woken = False

    def wake(self) -> None:
        if self.woken:
            return  # the core wakes on every packet queued; once is enough
        self.woken = True
        if self.scope is not None:
            self.scope.cancel()


def _parse_query(query_string: str) -> dict[str, str]:
    """First value of each query parameter (the fast path skips parse_qsl when nothing
    needs decoding)."""
    query: dict[str, str] = {}
    if not query_string:
        return query
    if "%" in query_string or "+" in query_string:
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(key, value)
        return query
    for part in query_string.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        query.setdefault(key, value)
    return query
