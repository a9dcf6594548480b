"""HTTP/1.1 pieces of the front door: the Request the application sees, plain responses.

Requests are read, limited (LIMITS.md: 414/431/408...) and dispatched by the one
connection loop in :mod:`volleyio.trio._http_loop`; the WebSocket handshake itself is
``volleyio.websocket.server_handshake`` / ``ClientHandshake`` (see _server/_client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

import h11

from ..errors import HandshakeError

SERVER_HEADER = b"volleyio"


class Request:
    """An HTTP request head as the server received it.

    Only the raw head bytes are kept (an open connection holds its request for its
    whole life); ``headers`` is decoded on access, names lower-cased.
    """

    __slots__ = ("method", "target", "http_version", "raw_head", "remote", "secure")

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        http_version: str = "1.1",
        raw_head: bytes = b"",
        remote: tuple[str, int] | None = None,
        secure: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        if headers is not None and not raw_head:
            lines = [f"{method} {target} HTTP/{http_version}"] + [f"{k}: {v}" for k, v in headers]
            raw_head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.raw_head = raw_head
        #: ``(host, port)`` of the peer, if known.
        self.remote = remote
        #: True when the request arrived over TLS.
        self.secure = secure

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r})"

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``[(lower-cased name, value), ...]`` in order (validated by h11 on arrival)."""
        # As h11 reads a head: lines end in LF (a CR before it is dropped); an obsolete
        # fold joins its line to the previous one with one space (leading whitespace of
        # the continuation removed, the previous line kept as it was); then each value is
        # stripped of spaces and tabs at both ends.
        raw_lines: list[list[str]] = []  # each header line with its folded continuations
        for line in self.raw_head.decode("latin-1").split("\n")[1:]:
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                continue
            if line[0] in " \t" and raw_lines:
                raw_lines[-1].append(line.lstrip(" \t"))
                continue
            raw_lines.append([line])
        out: list[tuple[str, str]] = []
        for parts in raw_lines:
            name, _, value = " ".join(parts).partition(":")
            out.append((name.strip().lower(), value.strip(" \t")))
        return out

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_tokens(self, name: str) -> list[str]:
        """All comma-separated tokens of every ``name`` header, stripped and lower-cased."""
        name = name.lower()
        tokens: list[str] = []
        for key, value in self.headers:
            if key == name:
                tokens.extend(t.strip().lower() for t in value.split(",") if t.strip())
        return tokens


@dataclass
class Response:
    """A plain HTTP response; return one from ``process_request`` to answer or reject."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, text: str | None = None) -> Response:
        if text is None:
            text = f"{status} {HTTPStatus(status).phrase}\n"
        return cls(status, text.encode(), [("content-type", "text/plain; charset=utf-8")])


def render_response(response: Response, *, head_only: bool = False) -> bytes:
    """Serialize a complete response that closes the connection (error responses get
    ``X-Content-Type-Options: nosniff``)."""
    headers = [(k.lower(), v) for k, v in response.headers]
    names = {k for k, _ in headers}
    if "content-length" not in names:
        headers.append(("content-length", str(len(response.body))))
    if "connection" not in names:
        headers.append(("connection", "close"))
    if "server" not in names:
        headers.append(("server", SERVER_HEADER.decode()))
    if response.status >= 400 and "x-content-type-options" not in names:
        headers.append(("x-content-type-options", "nosniff"))
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}".encode("latin-1")]
    for k, v in headers:
        lines.append(f"{k}: {v}".encode("latin-1"))
    out = b"\r\n".join(lines) + b"\r\n\r\n"
    return out if head_only else out + response.body


@dataclass
class ClientResponse:
    """The response to a client's opening handshake."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default


def parse_response_head(head: bytes) -> ClientResponse:
    """Parse a response head (ending in CRLFCRLF) with h11."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(head) + 1)
    # h11 needs to have "sent" a request before it will parse a response.
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise HandshakeError(f"malformed HTTP response: {exc}", 502) from None
    if not isinstance(event, (h11.Response, h11.InformationalResponse)):
        raise HandshakeError("malformed HTTP response", 502)
    return ClientResponse(
        status=event.status_code,
        reason=event.reason.decode("latin-1"),
        headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers],
    )
