"""``connect()``: the trio WebSocket client (URL, TLS, HTTP CONNECT proxy, redirects, reconnect)."""

from __future__ import annotations

import base64
import logging
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import h11
import trio

from .. import websocket as _ws
from ..errors import HandshakeError
from . import _http
from ._connection import Limits, WebSocketConnection
from ._errors import ConnectError, ConnectionClosed, InvalidURI, exit_nursery
from ._keepalive import Keepalive

logger = logging.getLogger("volleyio.trio.client")

MAX_RESPONSE_HEAD = 32 * 1024


@dataclass
class WSURL:
    """A parsed ``ws://``/``wss://`` URL (:func:`parse_url`)."""

    secure: bool
    host: str
    port: int
    target: str  # path + query
    user: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.target}"


def parse_url(url: str) -> WSURL:
    """Parse a ws:// or wss:// URL (http/https are accepted as aliases)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise InvalidURI(f"not a WebSocket URL: {url!r}")
    if not parts.hostname:
        raise InvalidURI(f"no host in URL {url!r}")
    if parts.fragment:
        raise InvalidURI(f"a WebSocket URL has no fragment: {url!r}")
    secure = scheme in ("wss", "https")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WSURL(
        secure=secure,
        host=parts.hostname,
        port=port or (443 if secure else 80),
        target=target,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


async def _read_head(stream: trio.abc.Stream, limit: int = MAX_RESPONSE_HEAD) -> tuple[bytes, bytes]:
    buf = bytearray()
    while True:
        data = await stream.receive_some(16384)
        if not data:
            raise ConnectError("connection closed during the opening handshake")
        scan = max(0, len(buf) - 3)
        buf += data
        end = buf.find(b"\r\n\r\n", scan)
        if end >= 0:
            return bytes(buf[: end + 4]), bytes(buf[end + 4 :])
        if len(buf) > limit:
            raise ConnectError("response head too large")


async def _open_proxy_tunnel(proxy: str, dest: WSURL) -> trio.abc.Stream:
    """Open a TCP stream through an HTTP proxy with CONNECT."""
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if parts.scheme not in ("http", ""):
        raise InvalidURI(f"unsupported proxy scheme {parts.scheme!r} (only http:// proxies)")
    if not parts.hostname:
        raise InvalidURI(f"no host in proxy URL {proxy!r}")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port or 8080)
    try:
        authority = f"[{dest.host}]:{dest.port}" if ":" in dest.host else f"{dest.host}:{dest.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(cred).decode())
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head, rest = await _read_head(stream)
        try:
            response = _http.parse_response_head(head)
        except HandshakeError as exc:
            raise ConnectError(f"proxy: {exc}") from None
        if not 200 <= response.status < 300:
            raise ConnectError(f"proxy refused CONNECT: {response.status} {response.reason}", response.status)
        if rest:
            raise ConnectError("proxy sent data before the tunnel was used")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


@dataclass
class _Options:
    subprotocols: list[str]
    extra_headers: list[tuple[str, str]]
    origin: str | None
    proxy: str | None
    ssl_context: _ssl.SSLContext | None
    max_redirects: int
    open_timeout: float
    extensions: list[Any]
    limits: Limits


async def _handshake(url: str, opts: _Options) -> tuple[WebSocketConnection, trio.abc.Stream]:
    """Open the transport and run the opening handshake, following redirects."""
    target = parse_url(url)
    for _ in range(opts.max_redirects + 1):
        if opts.proxy:
            stream: trio.abc.Stream = await _open_proxy_tunnel(opts.proxy, target)
        else:
            try:
                stream = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from None
        try:
            if target.secure:
                ctx = opts.ssl_context or _ssl.create_default_context()
                stream = trio.SSLStream(stream, ctx, server_hostname=target.host, https_compatible=True)
                await stream.do_handshake()
            headers = list(opts.extra_headers)
            if target.user is not None and not any(k.lower() == "authorization" for k, _ in headers):
                cred = f"{target.user}:{target.password or ''}".encode()
                headers.append(("Authorization", "Basic " + base64.b64encode(cred).decode()))
            # The core builds the request and validates the answer; h11 does HTTP.
            hs = _ws.ClientHandshake(
                host=target.host_header,
                target=target.target,
                subprotocols=tuple(opts.subprotocols),
                extensions=tuple(opts.extensions),
                origin=opts.origin,
                extra_headers=headers,
                max_message_size=opts.limits.max_message_size,
                max_fragments=opts.limits.max_fragments,
                stream_messages=True,
            )
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
            await stream.send_all((conn.send(hs.request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
            response = await _receive_response(stream, conn)
            location = _header(response, b"location")
            if response.status_code in (301, 302, 303, 307, 308) and location:
                new_url = urljoin(target.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1),
                                  location)
                new_target = parse_url(new_url)
                if target.secure and not new_target.secure:
                    raise ConnectError("refusing a redirect from wss:// to ws://", response.status_code)
                await trio.aclose_forcefully(stream)
                target = new_target
                continue
            if response.status_code != 101:
                reason = response.reason.decode("latin-1", "replace")
                raise ConnectError(f"server rejected the WebSocket upgrade: {response.status_code} {reason}",
                                   response.status_code)
            try:
                result = hs.receive_response(response)
            except HandshakeError as exc:
                raise ConnectError(f"invalid opening handshake response: {exc}") from None
            rest = bytes(conn.trailing_data[0])
            ws = WebSocketConnection(
                stream,
                client=True,
                limits=opts.limits,
                proto=result.connection,
                response_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
                initial_data=rest,
            )
            return ws, stream
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    raise ConnectError(f"too many redirects (more than {opts.max_redirects})")


async def _receive_response(
    stream: trio.abc.Stream, conn: h11.Connection
) -> h11.Response | h11.InformationalResponse:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ConnectError(f"malformed HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            if not data:
                raise ConnectError("connection closed during the opening handshake")
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            return event
        raise ConnectError(f"unexpected HTTP event {type(event).__name__}")


def _header(response: h11.Response | h11.InformationalResponse, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return value.decode("latin-1")
    return None


class connect:  # noqa: N801 - used like a function: ``async with connect(url) as ws``
    """Open a WebSocket client connection: ``async with connect("ws://…") as ws: …``.

    Options: ``subprotocols``, ``extra_headers``, ``origin``, ``proxy``
    (``"http://host:port"``, HTTP CONNECT), ``ssl_context`` (wss://),
    ``max_redirects`` (301/302/303/307/308 are followed; wss -> ws is refused),
    ``extensions`` (client extension factories), ``compression="deflate"``
    (offer permessage-deflate), ``open_timeout``,
    ``close_timeout``, ``ping_interval``/``ping_timeout`` (keepalive; None turns it
    off), ``max_message_size``, ``max_fragments``, ``max_queue``, ``write_limit``.
    On exit the connection is closed with 1000 (1011 if the body raised).
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str] = (),
        extra_headers: Sequence[tuple[str, str]] = (),
        origin: str | None = None,
        proxy: str | None = None,
        ssl_context: _ssl.SSLContext | None = None,
        max_redirects: int = 10,
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
    ) -> None:
        self.url = url
        extensions = list(extensions)
        if compression == "deflate":
            from ..websocket.deflate import ClientPerMessageDeflateFactory

            extensions.append(ClientPerMessageDeflateFactory())
        elif compression is not None:
            raise ValueError(f"unsupported compression {compression!r} (None or 'deflate')")
        self.options = _Options(
            subprotocols=list(subprotocols),
            extra_headers=list(extra_headers),
            origin=origin,
            proxy=proxy,
            ssl_context=ssl_context,
            max_redirects=max_redirects,
            open_timeout=open_timeout,
            extensions=list(extensions),
            limits=Limits(
                max_message_size=max_message_size,
                max_fragments=max_fragments,
                max_queue=max_queue,
                queue_low=max(max_queue // 4, 0),
                write_high=write_limit,
                write_low=write_limit // 4,
                close_timeout=close_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
            ),
        )
        self._nursery_manager: Any = None
        self._ws: WebSocketConnection | None = None

    async def __aenter__(self) -> WebSocketConnection:
        opts = self.options
        try:
            with trio.fail_after(opts.open_timeout):
                ws, _ = await _handshake(self.url, opts)
        except trio.TooSlowError:
            raise ConnectError(f"opening handshake timed out after {opts.open_timeout} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectError(f"connection failed during the opening handshake: {exc!r}") from None
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        ws._nursery = nursery
        ws._start_reader()
        keepalive = Keepalive(opts.limits.ping_interval, opts.limits.ping_timeout)
        keepalive.add(ws)
        nursery.start_soon(keepalive.run)
        self._ws = ws
        return ws

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        ws = self._ws
        assert ws is not None and self._nursery_manager is not None
        code = 1000 if exc is None or isinstance(exc, (ConnectionClosed, trio.Cancelled)) else 1011
        try:
            with trio.CancelScope(shield=True):
                try:
                    await ws.close(code, "" if code == 1000 else "client error")
                except ConnectionClosed:
                    pass
                await ws._close_transport()
        finally:
            ws._nursery.cancel_scope.cancel()  # type: ignore[union-attr]
        return await exit_nursery(self._nursery_manager, exc_type, exc, tb)


async def reconnecting(
    url: str,
    handler: Callable[[WebSocketConnection], Awaitable[Any]],
    *,
    min_delay: float = 0.5,
    max_delay: float = 30.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    max_attempts: int | None = None,
    on_error: Callable[[BaseException, float], Any] | None = None,
    **connect_options: Any,
) -> Any:
    """Run ``handler(ws)`` on a connection to ``url``, reconnecting when it drops.

    Returns the handler's return value once it returns normally. When the
    connection fails or closes (``ConnectError``, ``ConnectionClosed``), waits an
    exponentially growing delay (``min_delay * factor**n``, capped at ``max_delay``,
    with full jitter: each delay is scaled by a random factor in ``[1 - jitter, 1]``)
    and tries again; a connection that stayed open resets the backoff. After
    ``max_attempts`` consecutive failures the last error is raised. Bound the whole
    thing with a cancel scope.
    """
    failures = 0
    while True:
        opened = False
        try:
            async with connect(url, **connect_options) as ws:
                opened = True
                failures = 0
                return await handler(ws)
        except (ConnectError, ConnectionClosed, OSError) as exc:
            if isinstance(exc, ConnectError) and exc.status is not None and 400 <= exc.status < 500 \
                    and exc.status not in (408, 429):
                raise  # the server said no: retrying will not help
            failures = 0 if opened else failures + 1
            if max_attempts is not None and failures >= max_attempts:
                raise
            delay = backoff_delay(failures, min_delay, max_delay, factor, jitter)
            if on_error is not None:
                on_error(exc, delay)
            logger.info("connection to %s failed (%s); retrying in %.2f s", url, exc, delay)
            await trio.sleep(delay)


def backoff_delay(attempt: int, min_delay: float, max_delay: float, factor: float, jitter: float,
                  rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0 after a connection that was open)."""
    base = min(max_delay, min_delay * factor ** max(attempt - 1, 0))
    r = (rng or random).random()
    return base * (1.0 - jitter * r)
