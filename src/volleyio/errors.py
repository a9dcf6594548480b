"""The exception hierarchy. Everything volleyio raises on purpose derives from VolleyError."""

from __future__ import annotations


class VolleyError(Exception):
    """Root of every exception volleyio raises deliberately."""


class ProtocolError(VolleyError):
    """The peer broke a protocol rule. ``code`` is the WebSocket close code it maps to."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class HandshakeError(VolleyError):
    """An opening handshake failed. ``status`` is the HTTP status the failure maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosedError(VolleyError):
    """An operation needs an open connection but it is closing or closed.

    ``code`` and ``reason`` describe how it closed (1006 / ``""`` when no close frame
    was exchanged).
    """

    def __init__(self, message: str, code: int = 1006, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
