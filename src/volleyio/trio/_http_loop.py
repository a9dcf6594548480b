"""The HTTP/1.1 connection loop: the one place every door of the server goes through.

:func:`serve_connection` reads the requests of one TCP (or TLS) connection, one after
the other (keep-alive), and hands each to a :class:`Door` (the server's dispatch:
mounts, ``process_request`` pages, WebSocket routes). Everything HTTP/1.1 that is not
the door's business happens here, once:

* **Reading and parsing.** h11 is the parser of record. A head that arrives whole in
  one read and is plain (``GET``/``POST``/``OPTIONS``/``HEAD``, ``HTTP/1.1``, one
  ``Host``, ``Content-Length`` framing or none, no ``Transfer-Encoding``/``Expect``/
  ``Upgrade``) is parsed by :func:`parse_head_fast`, h11's twin for those heads: it
  either declines (``None``) or gives exactly the request h11 gives (method, target,
  version, headers in order, names lower-cased, values stripped); a differential test
  holds it to that. Every other head goes through h11.
* **Limits.** Request line 8 KiB -> 414, header block 16 KiB or 128 header fields -> 431
  (:class:`volleyio.websocket.RequestHeadGuard`, checked on the raw bytes as they
  arrive, before h11 buffers more), a head not complete within ``open_timeout`` -> 408
  when some of it had arrived (else the connection is just closed), a request body idle
  for ``BODY_IDLE_TIMEOUT`` -> the connection is closed; the body size limit is the
  door's (``read_body(limit)``, 413 is the door's answer).
* **Refusals** (answered here, before any door sees the request, then the connection is
  closed: nothing pipelined behind a refused request is read): a malformed head (400,
  or h11's status hint), ``HTTP/1.0`` (400 when it asks for an upgrade, else 505), both
  ``Content-Length`` and ``Transfer-Encoding`` (400, RFC 9112 section 6.3), a request
  target that is not in origin form (``/path?query``: absolute-form, ``CONNECT``'s
  authority-form and ``*`` get 400).
* **Responses.** :meth:`HttpConnection.respond` frames a body with ``Content-Length``,
  says ``Connection: close`` when the connection will not be reused, and adds
  ``X-Content-Type-Options: nosniff`` to every error response (status >= 400). A
  connection that closes after a response with input still unread is half-closed and
  drained briefly (:func:`linger`), so the client reads the response instead of a reset.
* **Keep-alive.** After the door returned, the next request is read when the response
  allowed it (HTTP/1.1, no ``Connection: close``) and the request's body was consumed
  (what the door left unread is read and dropped, up to a budget).

The dispatch interface is small: a door is ``async def handle_request(request, http)``
(see :class:`Door`); it answers through ``http`` (:meth:`HttpConnection.respond`,
:meth:`~HttpConnection.respond_page`, :meth:`~HttpConnection.read_body`), or takes the
connection over (a WebSocket upgrade) by calling :meth:`HttpConnection.detach` and
returning a coroutine that serves the rest of the connection; the loop returns it to the
caller, which awaits it once the loop's own state is gone.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Coroutine
from http import HTTPStatus
from typing import Any, Protocol

import h11
import trio

from .. import websocket as _ws
from ..errors import HandshakeError
from ._connection import _raw_socket
from ._http import Request, Response, render_response

__all__ = [
    "ABORTED",
    "BODY_IDLE_TIMEOUT",
    "Door",
    "HttpConnection",
    "RequestHead",
    "TOO_LARGE",
    "Takeover",
    "linger",
    "parse_head_fast",
    "render",
    "render_h11_response",
    "send_bytes",
    "serve_connection",
]

#: LIMITS.md: a request body that stalls this long (seconds between reads) is dropped.
BODY_IDLE_TIMEOUT = 10.0
#: h11's buffer for a request head: above the guard's limits (8 KiB line + 16 KiB block)
#: so that the guard, not h11, answers oversized heads (414/431).
MAX_HEAD = 32 * 1024
#: What ``read_body`` returns for a body above its limit / a body that did not arrive.
TOO_LARGE = "too large"
ABORTED = "aborted"
#: Unread body bytes the loop reads and drops to reuse a connection (else it closes).
_DISCARD_BUDGET = 1 << 20
#: After a closing response with input unread: how long / how much we still read.
_LINGER_TIME = 1.0
_LINGER_BYTES = 4 * 1024 * 1024
_READ_SIZE = 16384
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled

#: The rest of a connection a door took over (see :meth:`HttpConnection.detach`).
Takeover = Coroutine[Any, Any, None]


class Door(Protocol):
    """Who serves the requests the loop reads (the server's dispatch).

    ``handle_request`` gets each request in turn. It answers it through ``http``
    (exactly one response), or takes the connection over: ``http.detach()`` gives the
    bytes read past the head, and the coroutine it returns serves the rest of the
    connection (it runs after the loop has returned). Returning without a response
    closes the connection.
    """

    def handle_request(self, request: Request, http: HttpConnection) -> Awaitable[Takeover | None]: ...


class RequestHead:
    """One parsed request head: what h11 gives, in bytes.

    ``headers`` are ``(lower-cased name, value)`` pairs in arrival order, values without
    surrounding whitespace; ``raw`` is the head exactly as received (request line,
    header fields and the blank line).
    """

    __slots__ = ("method", "target", "http_version", "headers", "raw", "_h11")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
        raw: bytes,
        h11_request: h11.Request | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.raw = raw
        self._h11 = h11_request

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r}, {self.target!r}, {self.http_version!r}, {self.headers!r})"

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def tokens(self, name: bytes) -> list[bytes]:
        """The comma-separated elements of every ``name`` header, stripped and lower-cased."""
        out: list[bytes] = []
        for key, value in self.headers:
            if key == name:
                out.extend(item.strip(b" \t").lower() for item in value.split(b",") if item.strip(b" \t"))
        return out

    def h11_request(self) -> h11.Request:
        """The head as an ``h11.Request`` (what the WebSocket handshake validates)."""
        if self._h11 is None:
            self._h11 = h11.Request(
                method=self.method, target=self.target, headers=self.headers, http_version=self.http_version
            )
        return self._h11


# ---------------------------------------------------------------------- the fast path

_FAST_REQUEST_LINE = re.compile(rb"(GET|POST|OPTIONS|HEAD) ([\x21-\x7e]+) HTTP/1\.1")
_FAST_HEADER_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"  # token ":" OWS
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*"  # value OWS
)
_FAST_REFUSED = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
# Below the RequestHeadGuard's limits (8 KiB request line, 16 KiB block, 128 fields),
# so a head the fast path takes is one the guard would have let through.
_FAST_MAX_HEAD = 8 * 1024
_FAST_MAX_LINES = 100


def parse_head_fast(data: bytes) -> tuple[RequestHead, int] | None:
    """h11's twin for plain request heads: ``(head, Content-Length or 0)`` for a complete
    plain head at the start of ``data``, or None to let h11 do it (incomplete, unusual
    or invalid heads: h11 then decides, and gives the error)."""
    end = data.find(b"\r\n\r\n", 0, _FAST_MAX_HEAD)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines) > _FAST_MAX_LINES:
        return None
    match = _FAST_REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    length = -1
    host = False
    for line in lines[1:]:
        field = _FAST_HEADER_LINE.fullmatch(line)
        if field is None:
            return None
        name = field.group(1).lower()
        value = field.group(2)
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        elif name == b"host":
            if host:
                return None
            host = True
        elif name in _FAST_REFUSED:
            return None
        headers.append((name, value))
    if not host:
        return None
    head = RequestHead(match.group(1), match.group(2), b"1.1", headers, data[: end + 4])
    return head, max(length, 0)


def _refusal(head: RequestHead) -> tuple[int, str] | None:
    """Requests no door sees: ``(status, message)`` to answer before closing, or None."""
    if head.http_version != b"1.1":
        if head.header(b"upgrade") is not None:
            return 400, f"WebSocket handshake needs HTTP/1.1, not HTTP/{head.http_version.decode('latin-1')}"
        return 505, "only HTTP/1.1 is supported"
    if head.header(b"transfer-encoding") is not None and head.header(b"content-length") is not None:
        return 400, "both Content-Length and Transfer-Encoding"
    if not head.target.startswith(b"/"):
        return 400, "the request target must be a path (origin form)"
    return None


# ---------------------------------------------------------------------- writing


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
    return line


def render(
    status: int, headers: Any, body: bytes, *, head_only: bool = False, keep_alive: bool = False
) -> bytes:
    """A response on the wire: ``headers`` are ``(name, value)`` str pairs (from the
    server's own code or from request values h11 validated: no CR/LF reaches here);
    ``Content-Length`` is added when missing, ``Connection: close`` unless
    ``keep_alive``, ``X-Content-Type-Options: nosniff`` on errors when missing."""
    parts = [_status_line(status)]
    framed = False
    nosniff = status < 400
    connection = keep_alive
    check = not (nosniff and connection)  # only Content-Length to look for (the hot path)
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not framed or check:
            lowered = name.lower()
            if lowered == "content-length":
                framed = True
            elif lowered == "x-content-type-options":
                nosniff = True
            elif lowered == "connection":
                connection = True  # the caller's own (a handshake refusal says close)
    if not framed:
        parts.append(f"Content-Length: {len(body)}\r\n".encode("ascii"))
    if not nosniff:
        parts.append(b"X-Content-Type-Options: nosniff\r\n")
    if not connection:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)


def render_h11_response(
    response: h11.Response | h11.InformationalResponse, body: bytes = b"", extra: Any = ()
) -> bytes:
    """An h11 response event (the WebSocket handshake's 101 or rejection) on the wire,
    its headers as given (plus ``extra`` ``(name, value)`` str pairs)."""
    lines = [_status_line(response.status_code)[:-2]]
    names = set()
    for raw_name, raw_value in response.headers.raw_items():
        lines.append(raw_name + b": " + raw_value)
        names.add(raw_name.lower())
    for name, value in extra:
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
        names.add(name.lower().encode("latin-1"))
    if response.status_code >= 400 and b"x-content-type-options" not in names:
        lines.append(b"X-Content-Type-Options: nosniff")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send_bytes(stream: trio.abc.Stream, data: bytes) -> bool:
    """Write all of ``data`` (False if the peer is gone): one direct non-blocking ``send``
    first on plain TCP (no scheduler round trip when the kernel takes it all)."""
    if stream.__class__ is trio.SocketStream:
        raw = _raw_socket(stream)
        if raw is not None:
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                await trio.lowlevel.checkpoint()
                return False
            if sent == len(data):
                await _checkpoint_if_cancelled()
                return True
            data = data[sent:]
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return False
    return True


async def linger(stream: trio.abc.Stream) -> None:
    """Half-close, then drop what the client still sends (briefly, boundedly).

    Closing with unread data makes the kernel send RST, and the client may then lose the
    response it was sent (a 413, a 400) before it reads it.
    """
    send_eof = getattr(stream, "send_eof", None)
    if send_eof is None:
        return
    try:
        await send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    budget = _LINGER_BYTES
    with trio.move_on_after(_LINGER_TIME):
        while budget > 0:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            budget -= len(data)


async def _receive(stream: trio.abc.Stream, idle_timeout: float) -> bytes | None:
    """One read for a request body: bytes, ``b""`` at EOF, None after ``idle_timeout``."""
    with trio.move_on_after(idle_timeout):
        try:
            return bytes(await stream.receive_some(65536))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""
    return None


# ---------------------------------------------------------------------- the connection


class HttpConnection:
    """One client's HTTP/1.1 connection as a door sees it, while it serves a request.

    ``head`` is the current request's :class:`RequestHead`; ``stream`` the connection
    (``raw`` its socket on plain TCP, for drivers that wait on it directly); ``server``
    the :class:`~volleyio.trio.WebSocketServer` it arrived on (its nursery and options).
    """

    __slots__ = (
        "stream", "server", "raw", "remote", "secure", "open_timeout", "head",
        "_buffer", "_h11", "_remaining", "_declared", "_keep_alive", "_responded", "_detached",
        "_unread", "_linger",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        server: Any = None,
        *,
        open_timeout: float = 10.0,
        secure: bool = False,
        initial: bytes = b"",
    ) -> None:
        self.stream = stream
        #: The door that serves the connection (the :class:`~volleyio.trio.WebSocketServer`).
        self.server = server
        self.raw = _raw_socket(stream)
        #: ``(host, port)`` of the peer, if known (looked up once per connection).
        self.remote = _peer_of(stream)
        self.secure = secure
        self.open_timeout = open_timeout
        self.head: RequestHead | None = None
        self._buffer = initial  # bytes read past the current head (fast path) / next request
        self._h11: h11.Connection | None = None  # the current request's parser (h11 path)
        self._remaining = 0  # body bytes still to come (fast path)
        self._declared: int | None = None
        self._keep_alive = False
        self._responded = False
        self._detached = False
        self._unread = b""  # bytes read past the request by the door (``unread``)
        self._linger = False

    # -------------------------------------------------------------- reading requests

    async def next_request(self) -> RequestHead | None:
        """Read the next request head; None when the connection must close (the peer left,
        stayed idle, or was answered with an error here)."""
        deadline = trio.current_time() + self.open_timeout
        data = self._buffer
        self._buffer = b""
        self._h11 = None
        self.head = None
        if not data:
            data = await self._read_some(deadline)
            if not data:
                return None
        fast = parse_head_fast(data)
        if fast is not None:
            head, self._remaining = fast
            self._buffer = data[len(head.raw) :]
            self._declared = self._remaining
            # The fast path took HTTP/1.1 without Transfer-Encoding: only the target
            # form is left to check, and Connection only when there is one.
            if not head.target.startswith(b"/"):
                await self.refuse(400, "the request target must be a path (origin form)")
                return None
            keep_alive = True
            for name, value in head.headers:
                if name == b"connection" and b"close" in value.lower():
                    keep_alive = b"close" not in head.tokens(b"connection")
                    break
        else:
            parsed = await self._read_head_h11(data, deadline)
            if parsed is None:
                return None
            head = parsed
            refusal = _refusal(head)
            if refusal is not None:
                await self.refuse(*refusal)
                return None
            keep_alive = b"close" not in head.tokens(b"connection")
        self._keep_alive = keep_alive
        self._responded = False
        self.head = head
        return head

    async def _read_head_h11(self, data: bytes, deadline: float) -> RequestHead | None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        guard = _ws.RequestHeadGuard()
        received = bytearray()
        while True:
            if not data:
                data = await self._read_some(deadline)
                if not data:
                    if received.strip(b"\r\n") and trio.current_time() >= deadline:
                        await self.refuse(408, "request head not complete in time")
                    return None
            try:
                guard.feed(data)
            except HandshakeError as exc:
                await self.refuse(exc.status, str(exc))
                return None
            received += data
            conn.receive_data(data)
            data = b""
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                await self.refuse(status, "malformed request")
                return None
            if event is h11.NEED_DATA:
                continue
            if not isinstance(event, h11.Request):  # pragma: no cover - h11 servers get requests
                await self.refuse(400, "malformed request")
                return None
            trailing = len(conn.trailing_data[0])
            self._h11 = conn
            self._declared = None
            for name, value in event.headers:
                if name == b"content-length":
                    self._declared = int(value)
            return RequestHead(
                event.method,
                event.target,
                event.http_version,
                list(event.headers),
                bytes(received[: len(received) - trailing]),
                event,
            )

    async def _read_some(self, deadline: float) -> bytes:
        """One read (``b""`` at EOF, on error or at ``deadline``); straight from the
        socket when possible (a timeout scope only when it has to wait)."""
        raw = self.raw
        if raw is not None:
            while True:
                try:
                    data = raw.recv(_READ_SIZE)
                except BlockingIOError:
                    with trio.move_on_at(deadline) as scope:
                        await trio.lowlevel.wait_readable(raw)
                    if scope.cancelled_caught:
                        return b""
                    continue
                except OSError:
                    return b""
                await _checkpoint_if_cancelled()
                return data
        with trio.move_on_at(deadline):
            try:
                return bytes(await self.stream.receive_some(_READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        return b""

    # -------------------------------------------------------------- the request body

    @property
    def declared_length(self) -> int | None:
        """The request's ``Content-Length`` (None for chunked bodies and none at all)."""
        return self._declared

    @property
    def body_complete(self) -> bool:
        """True once the request's body was read (or it had none)."""
        conn = self._h11
        if conn is None:
            return self._remaining == 0
        return conn.their_state is h11.DONE

    async def read_body(self, limit: int) -> bytes | str:
        """The whole request body, or ``TOO_LARGE`` (above ``limit``: refused before
        reading when declared so, or as soon as it grows past it) or ``ABORTED``
        (truncated, malformed, or idle for ``BODY_IDLE_TIMEOUT``). At most ``limit``
        bytes are ever held."""
        if self._declared is not None and self._declared > limit:
            return TOO_LARGE
        conn = self._h11
        if conn is None:
            buffer = bytearray(self._buffer)
            remaining = self._remaining
            while len(buffer) < remaining:
                data = await _receive(self.stream, BODY_IDLE_TIMEOUT)
                if not data:
                    self._keep_alive = False
                    return ABORTED
                buffer += data
            body = bytes(buffer[:remaining])
            self._buffer = bytes(buffer[remaining:])
            self._remaining = 0
            return body
        if conn.they_are_waiting_for_100_continue:
            if not await send_bytes(self.stream, b"HTTP/1.1 100 Continue\r\n\r\n"):
                self._keep_alive = False
                return ABORTED
        received = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                self._keep_alive = False
                return ABORTED
            if isinstance(event, h11.Data):
                received += event.data
                if len(received) > limit:
                    self._keep_alive = False
                    return TOO_LARGE
                continue
            if isinstance(event, h11.EndOfMessage):
                return bytes(received)
            if event is not h11.NEED_DATA:  # pragma: no cover - h11 gives data, then the end
                self._keep_alive = False
                return ABORTED
            data = await _receive(self.stream, BODY_IDLE_TIMEOUT)
            if data is None:
                self._keep_alive = False
                return ABORTED
            conn.receive_data(data)

    async def discard_body(self, budget: int = _DISCARD_BUDGET) -> bool:
        """Read and drop the rest of the request body; True when it ended within
        ``budget`` bytes (the connection can then serve another request)."""
        if self.body_complete:
            return True
        if (self._declared or 0) > budget:
            self._keep_alive = False
            return False
        body = await self.read_body(budget)
        if isinstance(body, str):
            self._keep_alive = False
            return False
        return True

    def unread(self, data: bytes) -> None:
        """Give back bytes read past the request (the start of a pipelined next one)."""
        self._unread += data

    # -------------------------------------------------------------- answering

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may serve another request after this one's response."""
        return self._keep_alive

    async def respond(
        self, status: int, headers: Any, body: bytes = b"", *, head_only: bool = False, close: bool = False
    ) -> bool:
        """Answer the request (see ``render``). The connection is kept for the next
        request when the request allows it, its body was read (or could be dropped) and
        ``close`` is false. Returns False when the peer is gone."""
        if close:
            self._keep_alive = False
        elif self._keep_alive and not self.body_complete:
            await self.discard_body()
        self._responded = True
        if not self._keep_alive and (not self.body_complete or self._buffer or status >= 400):
            self._linger = True
        return await send_bytes(self.stream, render(status, headers, body, head_only=head_only, keep_alive=self._keep_alive))

    async def respond_page(self, response: Response, *, head_only: bool = False) -> bool:
        """Answer with a :class:`~volleyio.trio.Response` (pages, refusals) and close."""
        self._keep_alive = False
        self._responded = True
        self._linger = True
        return await send_bytes(self.stream, render_response(response, head_only=head_only))

    async def respond_raw(self, data: bytes) -> bool:
        """Write an already rendered response and close the connection."""
        self._keep_alive = False
        self._responded = True
        self._linger = True
        return await send_bytes(self.stream, data)

    async def refuse(self, status: int, message: str | None = None) -> None:
        """Answer with an error (plain-text ``message``) and close the connection."""
        await self.respond_page(Response.text(status, None if message is None else f"{status} {HTTPStatus(status).phrase}: {message}\n"))

    def detach(self) -> bytes:
        """Take the connection over (a WebSocket upgrade): the loop reads nothing more.
        Returns the bytes already read past the request head."""
        self._detached = True
        self._keep_alive = False
        conn = self._h11
        leftover = self._buffer if conn is None else bytes(conn.trailing_data[0])
        self._buffer = b""
        self._h11 = None
        return leftover + self._unread

    async def _finish(self) -> bool:
        """After the door returned: True to read the next request."""
        if self._detached:
            return False
        if not self._responded or not self._keep_alive or not self.body_complete:
            if self._linger or not self.body_complete:
                await linger(self.stream)
            return False
        conn = self._h11
        if conn is not None:
            self._buffer = bytes(conn.trailing_data[0])
            self._h11 = None
        if self._unread:
            self._buffer += self._unread
            self._unread = b""
        return True


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int] | None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
        if peer is not None:
            return (str(peer[0]), int(peer[1]))
    except (OSError, TypeError, IndexError):
        pass
    return None


async def serve_connection(
    stream: trio.abc.Stream, door: Door, *, open_timeout: float = 10.0, secure: bool = False
) -> Takeover | None:
    """Serve the requests of one connection with ``door`` until it closes or a door takes
    it over; returns that door's coroutine (the caller awaits it, then closes)."""
    http = HttpConnection(stream, door, open_timeout=open_timeout, secure=secure)
    while True:
        head = await http.next_request()
        if head is None:
            return None
        request = Request(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("ascii", "replace"),
            http_version=head.http_version.decode("ascii", "replace"),
            raw_head=head.raw,
            remote=http.remote,
            secure=secure,
        )
        del head
        handling = door.handle_request(request, http)
        del request  # the door drops it when done with it (a parked GET, a WebSocket)
        takeover = await handling
        del handling
        if takeover is not None:
            return takeover
        if not await http._finish():
            return None

