"""volleyio: a realtime engine for trio (WebSocket, Engine.IO v4, Socket.IO v5)."""

from __future__ import annotations

from .errors import HandshakeError, ProtocolError, SpeedupsUnavailableWarning, VolleyError

__version__ = "0.1.0.dev0"

__all__ = ["HandshakeError", "ProtocolError", "SpeedupsUnavailableWarning", "VolleyError", "__version__"]
