"""Exceptions of the trio layer, and the unwrapping of trio's exception groups."""

from __future__ import annotations

import sys
from typing import Any

from ..errors import VolleyError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup as BaseExceptionGroup
else:
    import builtins

    BaseExceptionGroup = builtins.BaseExceptionGroup  # re-exported for the other modules


__all__ = [
    "BaseExceptionGroup",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "EngineIOClosed",
    "InvalidURI",
    "closed_exception",
    "exit_nursery",
    "unwrap_group",
]


class ConnectionClosed(VolleyError):
    """The WebSocket connection is closed; ``code``/``reason`` are the close frame's.

    ``code`` is 1006 when the connection ended without a close frame (TCP lost).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason

    @property
    def ok(self) -> bool:
        """True for a normal closure (1000 or 1001)."""
        return self.code in (1000, 1001)


class ConnectionClosedOK(ConnectionClosed):
    """Closed normally (1000 / 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """Closed with an error code, or without a close frame (1006)."""


class EngineIOClosed(ConnectionClosedError):
    """An Engine.IO session (server or client side) is closed.

    ``reason`` is the Engine.IO disconnect reason: ``"ping timeout"``, ``"transport
    close"``, ``"transport error"``, ``"message too big"``, ``"parse error"``,
    ``"forced close"``, ``"client close"``, ``"slow consumer"``, ... ``code`` is 1000
    for ``"forced close"``/``"client close"`` and 1006 otherwise (there is no WebSocket
    close code over long-polling).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(1000 if reason in ("forced close", "client close") else 1006, reason)
        self.args = (f"Engine.IO session closed: {reason}",)


def closed_exception(code: int, reason: str) -> ConnectionClosed:
    if code in (1000, 1001):
        return ConnectionClosedOK(code, reason)
    return ConnectionClosedError(code, reason)


class InvalidURI(VolleyError):
    """The URL given to :func:`connect` is not a ws:// or wss:// URL."""


class ConnectError(VolleyError):
    """The opening handshake failed (network, proxy, redirect or HTTP status).

    ``status`` is the HTTP status the server answered with, when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def unwrap_group(exc: BaseException) -> BaseException:
    """Return the single leaf of nested one-member exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def exit_nursery(manager: Any, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
    """``manager.__aexit__`` for a nursery an object opened for its own tasks, without
    leaking an ExceptionGroup: a group holding one error raises that error (or lets the
    one already propagating, ``exc``, go on); a real group of several is raised as is."""
    try:
        return bool(await manager.__aexit__(exc_type, exc, tb))
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is exc:
            return False
        if leaf is group:
            raise
        raise leaf from None
