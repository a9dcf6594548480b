"""The RFC 6455 opening handshake on h11 events, for both roles, plus HTTP head limits.

Server: :func:`server_handshake` takes the ``h11.Request`` of an upgrade request and
returns either :class:`HandshakeAccepted` (the ``101`` ``h11.InformationalResponse``
to send and a ready :class:`~volleyio.websocket.connection.WebSocketConnection`) or
:class:`HandshakeRejected` (an ``h11.Response``, its body and the
:class:`~volleyio.errors.HandshakeError` saying why). It never raises for anything
the client sent.

Client: :class:`ClientHandshake` builds the ``h11.Request`` and validates the
server's answer with :meth:`ClientHandshake.receive_response`, which raises
:class:`~volleyio.errors.HandshakeError` with a clear message on any mismatch.

HTTP head limits: h11 bounds the whole incomplete head (``max_incomplete_event_size``)
but not the request line or the number of header fields; :class:`RequestHeadGuard`
checks the raw bytes the I/O layer feeds to h11 (request line 8 KiB -> 414, header
block 16 KiB -> 431, 128 header fields -> 431).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import urlsplit

import h11

from ..errors import HandshakeError
from .connection import DEFAULT_MAX_FRAGMENTS, DEFAULT_MAX_MESSAGE_SIZE, Role, WebSocketConnection
from .extensions import (
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
    is_token,
    parse_extensions_header,
)

__all__ = [
    "WEBSOCKET_GUID",
    "compute_accept",
    "generate_key",
    "OriginPolicy",
    "SubprotocolPolicy",
    "HandshakeAccepted",
    "HandshakeRejected",
    "server_handshake",
    "rejection_response",
    "is_same_origin",
    "ClientHandshake",
    "ClientHandshakeResult",
    "RequestHeadGuard",
    "DEFAULT_MAX_REQUEST_LINE",
    "DEFAULT_MAX_HEADER_BLOCK",
    "DEFAULT_MAX_HEADER_COUNT",
]

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

DEFAULT_MAX_REQUEST_LINE = 8 * 1024
DEFAULT_MAX_HEADER_BLOCK = 16 * 1024
DEFAULT_MAX_HEADER_COUNT = 128

#: Who may connect, by ``Origin`` header. ``None`` (the default) = same-origin: a
#: request with an ``Origin`` must name the same host and port as its ``Host``
#: header. ``"*"`` = anyone. A sequence = an allow-list of exact origins
#: (``"https://app.example.com"``, compared case-insensitively; ``"*"`` inside it
#: also allows all). A callable gets ``(origin, request)`` and returns True to allow.
#: Requests *without* an ``Origin`` header (non-browser clients, which could forge one
#: anyway) are always allowed; use the callable form to refuse them.
OriginPolicy = Union[None, str, Sequence[str], Callable[[Union[str, None], h11.Request], bool]]
#: Subprotocol selection: the server's supported subprotocols in preference order
#: (the first one the client also offered wins), or a callable receiving the client's
#: offers in order and returning one of them or ``None``.
SubprotocolPolicy = Union[Sequence[str], Callable[[list[str]], Union[str, None]]]

HeaderList = list[tuple[bytes, bytes]]
HeaderInput = Sequence[tuple[Union[str, bytes], Union[str, bytes]]]


def _to_bytes(value: str | bytes) -> bytes:
    # h11 itself encodes str header names/values as ASCII.
    return value.encode("ascii") if isinstance(value, str) else value


def _header_list(headers: HeaderInput) -> HeaderList:
    return [(_to_bytes(name), _to_bytes(value)) for name, value in headers]


def compute_accept(key: str | bytes) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest()).decode("ascii")


def generate_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``: base64 of 16 bytes from ``secrets``."""
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    # h11 lowercases header names on the way in.
    return [value.decode("latin-1") for key, value in headers if key == name]


def _comma_tokens(values: Iterable[str]) -> list[str]:
    """Split a comma-separated list header (RFC 7230 #rule) into stripped elements."""
    items: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if item:
                items.append(item)
    return items


@dataclass(frozen=True)
class HandshakeAccepted:
    """The upgrade is accepted: send ``response`` (101), then hand bytes to ``connection``.

    Any bytes h11 already read past the request head (``h11.Connection.trailing_data``)
    belong to the WebSocket stream: feed them to ``connection.receive_data`` first
    (only when non-empty: ``receive_data(b"")`` means EOF).
    """

    response: h11.InformationalResponse
    connection: WebSocketConnection
    subprotocol: str | None
    extensions: list[Extension]


@dataclass(frozen=True)
class HandshakeRejected:
    """The upgrade is refused: send ``response`` and ``body``, then close the connection."""

    response: h11.Response
    body: bytes
    error: HandshakeError


def rejection_response(
    error: HandshakeError, extra_headers: HeaderInput = ()
) -> tuple[h11.Response, bytes]:
    """An HTTP error response (plain-text body = the error message) for ``error.status``.

    Adds ``Sec-WebSocket-Version: 13`` and ``Upgrade: websocket`` on 426, ``Allow:
    GET`` on 405, and ``Connection: close`` always.
    """
    body = (str(error) + "\n").encode("utf-8")
    headers: list[tuple[Union[str, bytes], Union[str, bytes]]] = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    if error.status == 426:
        headers.append(("Upgrade", "websocket"))
        headers.append(("Sec-WebSocket-Version", "13"))
    elif error.status == 405:
        headers.append(("Allow", "GET"))
    headers.extend(extra_headers)
    return h11.Response(status_code=error.status, headers=_header_list(headers)), body


_INVALID_PORT = -1


def _port_number(digits: str) -> int:
    """The port a string of digits names, or ``_INVALID_PORT``: never ``int()`` of a
    long digit string (quadratic, and a ValueError past ``sys.int_max_str_digits``) nor
    of non-ASCII digits such as ``"²"`` (``str.isdigit`` accepts them, ``int`` does not)."""
    if len(digits) <= 5 and digits.isascii():
        port = int(digits)
        if port <= 0xFFFF:
            return port
    return _INVALID_PORT


def _split_host_port(authority: str, default_port: int | None) -> tuple[str, int | None]:
    authority = authority.strip().lower()
    if authority.startswith("["):  # IPv6 literal
        end = authority.find("]")
        if end < 0:
            return authority, default_port
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            return host, _port_number(rest[1:])
        return host, default_port
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return host, _port_number(port)
    return authority, default_port


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def is_same_origin(origin: str, host: str) -> bool:
    """True if ``origin`` (``scheme://host[:port]``) names the same host and port as a
    ``Host`` header value. A ``Host`` without a port is taken to use the origin
    scheme's default port; ``null`` and unparsable origins, and any with a port that
    cannot exist (over 5 digits, above 65535, non-ASCII digits), are never same-origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc:
        return False
    default_port = _DEFAULT_PORTS[scheme]
    origin_host, origin_port = _split_host_port(parts.netloc, default_port)
    host_name, host_port = _split_host_port(host, default_port)
    return bool(origin_host) and origin_host == host_name and origin_port == host_port != _INVALID_PORT


def _origin_allowed(policy: OriginPolicy, origin: str | None, host: str, request: h11.Request) -> bool:
    if callable(policy):
        return bool(policy(origin, request))
    if origin is None:
        return True
    if policy is None:
        return is_same_origin(origin, host)
    if isinstance(policy, str):
        if policy == "*":
            return True
        policy = (policy,)
    normalized = origin.strip().lower().rstrip("/")
    return any(allowed == "*" or allowed.strip().lower().rstrip("/") == normalized for allowed in policy)


def _validate_upgrade_request(request: h11.Request) -> tuple[str, str]:
    """Check the RFC 6455 section 4.2.1 rules; return ``(key, host)`` or raise HandshakeError."""
    if request.method != b"GET":
        raise HandshakeError(f"WebSocket handshake needs GET, not {request.method.decode('latin-1')}", 405)
    if request.http_version != b"1.1":
        raise HandshakeError(
            f"WebSocket handshake needs HTTP/1.1, not HTTP/{request.http_version.decode('latin-1')}", 400
        )
    headers = request.headers
    upgrade = [item.lower() for item in _comma_tokens(_header_values(headers, b"upgrade"))]
    if "websocket" not in upgrade:
        raise HandshakeError("missing or invalid Upgrade header: expected 'websocket'", 426)
    connection = [item.lower() for item in _comma_tokens(_header_values(headers, b"connection"))]
    if "upgrade" not in connection:
        raise HandshakeError("missing or invalid Connection header: expected 'Upgrade'", 426)
    versions = _header_values(headers, b"sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != "13":
        raise HandshakeError("unsupported Sec-WebSocket-Version: only 13 is supported", 426)
    keys = _header_values(headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError("missing or repeated Sec-WebSocket-Key header", 400)
    key = keys[0].strip()
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise HandshakeError("Sec-WebSocket-Key is not valid base64", 400) from None
    if len(raw_key) != 16:
        raise HandshakeError("Sec-WebSocket-Key must be the base64 of 16 bytes", 400)
    hosts = _header_values(headers, b"host")
    if len(hosts) != 1:
        raise HandshakeError("missing or repeated Host header", 400)
    return key, hosts[0]


def _select_subprotocol(policy: SubprotocolPolicy, offered: list[str]) -> str | None:
    if callable(policy):
        chosen = policy(offered)
        if chosen is not None and chosen not in offered:
            raise HandshakeError(f"subprotocol selector returned {chosen!r}, which the client did not offer", 500)
        return chosen
    for candidate in policy:
        if candidate in offered:
            return candidate
    return None


def server_handshake(
    request: h11.Request,
    *,
    subprotocols: SubprotocolPolicy = (),
    origins: OriginPolicy = None,
    extensions: Sequence[ServerExtensionFactory] = (),
    extra_headers: HeaderInput = (),
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS,
    auto_pong: bool = True,
    stream_messages: bool = False,
) -> HandshakeAccepted | HandshakeRejected:
    """Validate a client's upgrade request and build the answer (RFC 6455 section 4.2).

    Rejections: 405 (method not GET), 400 (HTTP/1.0, bad or missing
    ``Sec-WebSocket-Key``/``Host``, malformed ``Sec-WebSocket-Extensions`` or
    ``Sec-WebSocket-Protocol``), 426 (not an upgrade to websocket, or version other
    than 13), 403 (origin refused by ``origins``, see :data:`OriginPolicy`), 500 (a
    hook misbehaved). Extensions are negotiated in the order of ``extensions``; each
    factory sees every client offer of its name. ``extra_headers`` are added to the
    101 response. The connection options are passed to the new
    :class:`WebSocketConnection`.
    """
    try:
        key, host = _validate_upgrade_request(request)
        origin_values = _header_values(request.headers, b"origin")
        if len(origin_values) > 1:
            raise HandshakeError("repeated Origin header", 400)
        origin = origin_values[0] if origin_values else None
        if not _origin_allowed(origins, origin, host, request):
            raise HandshakeError(f"origin {origin!r} is not allowed", 403)

        offered_protocols = _comma_tokens(_header_values(request.headers, b"sec-websocket-protocol"))
        if not all(is_token(item) for item in offered_protocols):
            raise HandshakeError("malformed Sec-WebSocket-Protocol header", 400)
        subprotocol = _select_subprotocol(subprotocols, offered_protocols) if offered_protocols else None

        negotiated: list[Extension] = []
        response_extensions: list[str] = []
        if extensions:
            offers = parse_extensions_header(_header_values(request.headers, b"sec-websocket-extensions"))
            claimed_rsv = 0
            for factory in extensions:
                offers_for_factory = [params for name, params in offers if name == factory.name]
                if not offers_for_factory:
                    continue
                result = factory.negotiate(offers_for_factory)
                if result is None:
                    continue
                header_value, extension = result
                if extension.rsv_mask & claimed_rsv:
                    continue  # two extensions cannot share an RSV bit; keep the earlier one
                claimed_rsv |= extension.rsv_mask
                negotiated.append(extension)
                response_extensions.append(header_value)
    except HandshakeError as error:
        response, body = rejection_response(error)
        return HandshakeRejected(response, body, error)

    headers: list[tuple[Union[str, bytes], Union[str, bytes]]] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", compute_accept(key)),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if response_extensions:
        headers.append(("Sec-WebSocket-Extensions", ", ".join(response_extensions)))
    headers.extend(extra_headers)
    connection = WebSocketConnection(
        Role.SERVER,
        max_message_size=max_message_size,
        max_fragments=max_fragments,
        extensions=negotiated,
        auto_pong=auto_pong,
        stream_messages=stream_messages,
        subprotocol=subprotocol,
    )
    return HandshakeAccepted(
        h11.InformationalResponse(status_code=101, headers=_header_list(headers)), connection, subprotocol, negotiated
    )


@dataclass(frozen=True)
class ClientHandshakeResult:
    """A validated 101: the ready client connection and what was negotiated."""

    connection: WebSocketConnection
    subprotocol: str | None
    extensions: list[Extension]


@dataclass
class ClientHandshake:
    """The client side of the opening handshake (RFC 6455 section 4.1).

    ``host`` is the ``Host`` header value (``"example.com:8080"``), ``target`` the
    request target (path and query). :attr:`request` is the ``h11.Request`` to send;
    after h11 produced the server's response, :meth:`receive_response` validates it.
    """

    host: str
    target: str = "/"
    subprotocols: Sequence[str] = ()
    extensions: Sequence[ClientExtensionFactory] = ()
    origin: str | None = None
    extra_headers: HeaderInput = ()
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    auto_pong: bool = True
    stream_messages: bool = False
    key: str = field(default_factory=generate_key)

    @property
    def request(self) -> h11.Request:
        """The upgrade request (a new h11 event each time; the key stays the same)."""
        headers: list[tuple[Union[str, bytes], Union[str, bytes]]] = [
            ("Host", self.host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if self.origin is not None:
            headers.append(("Origin", self.origin))
        if self.subprotocols:
            for protocol in self.subprotocols:
                if not is_token(protocol):
                    raise ValueError(f"subprotocol is not a token: {protocol!r}")
            headers.append(("Sec-WebSocket-Protocol", ", ".join(self.subprotocols)))
        if self.extensions:
            headers.append(("Sec-WebSocket-Extensions", ", ".join(factory.offer() for factory in self.extensions)))
        headers.extend(self.extra_headers)
        return h11.Request(method="GET", target=self.target, headers=_header_list(headers))

    def receive_response(self, response: h11.InformationalResponse | h11.Response) -> ClientHandshakeResult:
        """Validate the server's response; return the ready connection or raise HandshakeError.

        The error's ``status`` is the response status when the server did not
        switch protocols, else 400 for an invalid 101.
        """
        if response.status_code != 101:
            raise HandshakeError(
                f"server answered {response.status_code} {response.reason.decode('latin-1', 'replace')} "
                "instead of switching protocols",
                response.status_code,
            )
        headers = response.headers
        upgrade = [item.lower() for item in _comma_tokens(_header_values(headers, b"upgrade"))]
        if upgrade != ["websocket"]:
            raise HandshakeError(f"invalid Upgrade header in the 101 response: {upgrade!r}")
        connection = [item.lower() for item in _comma_tokens(_header_values(headers, b"connection"))]
        if "upgrade" not in connection:
            raise HandshakeError("the 101 response's Connection header lacks 'Upgrade'")
        accepts = _header_values(headers, b"sec-websocket-accept")
        if len(accepts) != 1:
            raise HandshakeError("missing or repeated Sec-WebSocket-Accept header")
        if accepts[0].strip() != compute_accept(self.key):
            raise HandshakeError("Sec-WebSocket-Accept does not match our Sec-WebSocket-Key")

        chosen_protocols = _comma_tokens(_header_values(headers, b"sec-websocket-protocol"))
        subprotocol: str | None = None
        if chosen_protocols:
            if len(chosen_protocols) > 1:
                raise HandshakeError(f"server chose several subprotocols: {chosen_protocols!r}")
            subprotocol = chosen_protocols[0]
            if subprotocol not in self.subprotocols:
                raise HandshakeError(f"server chose subprotocol {subprotocol!r}, which we did not offer")

        negotiated: list[Extension] = []
        accepted = parse_extensions_header(_header_values(headers, b"sec-websocket-extensions"))
        factories = {factory.name: factory for factory in self.extensions}
        seen: set[str] = set()
        claimed_rsv = 0
        for name, params in accepted:
            factory = factories.get(name)
            if factory is None:
                raise HandshakeError(f"server accepted extension {name!r}, which we did not offer")
            if name in seen:
                raise HandshakeError(f"server accepted extension {name!r} twice")
            seen.add(name)
            extension = factory.accept(params)
            if extension.rsv_mask & claimed_rsv:
                raise HandshakeError(f"extension {name!r} claims RSV bits another extension already uses")
            claimed_rsv |= extension.rsv_mask
            negotiated.append(extension)

        ws = WebSocketConnection(
            Role.CLIENT,
            max_message_size=self.max_message_size,
            max_fragments=self.max_fragments,
            extensions=negotiated,
            auto_pong=self.auto_pong,
            stream_messages=self.stream_messages,
            subprotocol=subprotocol,
        )
        return ClientHandshakeResult(ws, subprotocol, negotiated)


class RequestHeadGuard:
    """Enforce request-line / header-block / header-count limits on raw HTTP bytes.

    Feed it the same bytes you feed to ``h11.Connection.receive_data`` while a
    request head is being read; :meth:`feed` raises :class:`HandshakeError` with
    status 414 (request line too long) or 431 (header block too large or too many
    header fields) as soon as a limit is crossed -- before h11 would buffer more.
    Once the blank line ending the head was seen, further bytes (a body, or the
    WebSocket stream) are not inspected; call :meth:`reset` before the next request
    on a keep-alive connection. Answer a raised error with
    :func:`rejection_response` and close the connection.
    """

    __slots__ = ("max_request_line", "max_header_block", "max_header_count", "_line_length", "_lines", "_head_bytes", "_done", "_last_was_cr")

    def __init__(
        self,
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_block = max_header_block
        self.max_header_count = max_header_count
        self.reset()

    def reset(self) -> None:
        """Start checking a new request head."""
        self._line_length = 0  # bytes of the current line so far, without its line ending
        self._lines = 0  # complete non-empty lines so far (request line + header fields)
        self._head_bytes = 0  # header-block bytes after the request line
        self._done = False
        self._last_was_cr = False

    @property
    def head_complete(self) -> bool:
        """True once the empty line that ends the head has been fed."""
        return self._done

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``; raise HandshakeError(414/431) when a limit is crossed."""
        if self._done:
            return
        view = bytes(data)
        pos = 0
        end = len(view)
        while pos < end and not self._done:
            newline = view.find(b"\n", pos)
            segment_end = end if newline < 0 else newline
            segment = segment_end - pos
            self._line_length += segment
            if self._lines > 0:
                self._head_bytes += segment + (1 if newline >= 0 else 0)
            self._check()
            if newline < 0:
                break
            # A line ended; its length excludes an optional CR before the LF.
            line_length = self._line_length
            if line_length and (view[newline - 1 : newline] == b"\r" if newline > pos else self._last_was_cr):
                line_length -= 1
            if line_length == 0:
                if self._lines > 0:
                    self._done = True  # the blank line after the header fields
                # Blank lines before the request line are tolerated (RFC 7230 section 3.5).
            else:
                if self._lines == 0 and line_length > self.max_request_line:
                    raise HandshakeError(f"request line longer than {self.max_request_line} bytes", 414)
                self._lines += 1
                if self._lines - 1 > self.max_header_count:
                    raise HandshakeError(f"more than {self.max_header_count} header fields", 431)
            self._line_length = 0
            pos = newline + 1
        self._last_was_cr = end > 0 and view[end - 1 : end] == b"\r"

    def _check(self) -> None:
        if self._lines == 0:
            # +1: the line's own CR is counted in _line_length until the LF arrives.
            if self._line_length > self.max_request_line + 1:
                raise HandshakeError(f"request line longer than {self.max_request_line} bytes", 414)
        elif self._head_bytes > self.max_header_block:
            raise HandshakeError(f"header block larger than {self.max_header_block} bytes", 431)
