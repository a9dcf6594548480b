"""Translating ASGI scopes and messages to what volleyio's cores and handlers take."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..engineio.server import HttpRequest, HttpResponse
from ..trio._engineio_polling import _parse_query
from ..trio._engineio_session import EngineIORequest
from ..trio._http import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_path(scope: Scope) -> str:
    """The request path within this application (``root_path`` removed if present)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "") or ""
    if root and path.startswith(root) and path != root:
        path = path[len(root):]
    return path or "/"


def scope_target(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"") or b""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("path", "/")
    return path + ("?" + query.decode("latin-1") if query else "")


def scope_headers(scope: Scope) -> dict[str, str]:
    """First value of each header, names lower-cased (ASGI gives them lower-case)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = bytes(raw_name).decode("latin-1").lower()
        if name not in headers:
            headers[name] = bytes(raw_value).decode("latin-1")
    return headers


def raw_head(scope: Scope, method: str) -> bytes:
    """The request head as it would have arrived on HTTP/1.1 (what :class:`Request` and
    :class:`EngineIORequest` keep)."""
    version = scope.get("http_version", "1.1")
    lines = [f"{method} {scope_target(scope)} HTTP/{version}".encode("latin-1")]
    for raw_name, raw_value in scope.get("headers", ()):
        lines.append(bytes(raw_name) + b": " + bytes(raw_value))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def remote_of(scope: Scope) -> tuple[str, int] | None:
    client = scope.get("client")
    if not client:
        return None
    try:
        return (str(client[0]), int(client[1]))
    except (TypeError, ValueError, IndexError):
        return None


def is_secure(scope: Scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def method_of(scope: Scope) -> str:
    return "GET" if scope["type"] == "websocket" else str(scope.get("method", "GET"))


def core_request(scope: Scope) -> HttpRequest:
    """The Engine.IO core's view of a request (a WebSocket scope is an upgrade)."""
    query: bytes = scope.get("query_string", b"") or b""
    return HttpRequest(
        method_of(scope),
        scope_path(scope),
        _parse_query(query.decode("latin-1")),
        scope_headers(scope),
        websocket_upgrade=scope["type"] == "websocket",
    )


def handshake_record(scope: Scope) -> EngineIORequest:
    return EngineIORequest(raw_head(scope, method_of(scope)), remote_of(scope), is_secure(scope))


def front_request(scope: Scope) -> Request:
    """The :class:`volleyio.trio.Request` of a scope (what WebSocket route handlers see)."""
    method = method_of(scope)
    version = str(scope.get("http_version", "1.1"))
    return Request(
        method=method,
        target=scope_target(scope),
        http_version=version,
        raw_head=raw_head(scope, method),
        remote=remote_of(scope),
        secure=is_secure(scope),
    )


def asgi_headers(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def send_response(send: Send, response: HttpResponse, head_only: bool = False) -> None:
    """A core response as ``http.response.start`` and one ``http.response.body``."""
    await send({"type": "http.response.start", "status": response.status, "headers": asgi_headers(response.headers)})
    await send({"type": "http.response.body", "body": b"" if head_only else response.body})


async def send_plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))))
    await send_response(send, HttpResponse(status, headers, body))


async def refuse_websocket(scope: Scope, send: Send, status: int, body: bytes) -> None:
    """Refuse a WebSocket handshake with an HTTP response: ``status`` and ``body`` when
    the server has the ``websocket.http.response`` extension (hypercorn, uvicorn),
    otherwise a close before accept (the server answers 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({
            "type": "websocket.http.response.start",
            "status": status,
            "headers": asgi_headers((("Content-Type", "text/html"), ("Content-Length", str(len(body))))),
        })
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008})
