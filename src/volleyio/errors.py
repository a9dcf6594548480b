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


class SpeedupsUnavailableWarning(RuntimeWarning):
    """Issued once, when ``volleyio._speedups`` is imported, if the compiled speedups were
    built for this installation (or their build was attempted and failed, e.g. a source
    install without a C compiler) but cannot be loaded: volleyio then runs on the
    pure-Python twins, with the same behaviour and lower speed. Not issued when
    ``VOLLEYIO_NO_EXTENSIONS=1`` asks for the pure twins, nor where no build was attempted
    (PyPy, a build with ``VOLLEYIO_NO_EXTENSIONS=1``, a source checkout on ``sys.path``).
    Silence it with ``warnings.filterwarnings("ignore", category=SpeedupsUnavailableWarning)``
    or ``VOLLEYIO_NO_EXTENSIONS=1``."""


class ConnectionClosedError(VolleyError):
    """An operation needs an open connection but it is closing or closed.

    ``code`` and ``reason`` describe how it closed (1006 / ``""`` when no close frame
    was exchanged).
    """

    def __init__(self, message: str, code: int = 1006, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
