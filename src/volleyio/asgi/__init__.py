"""volleyio as an ASGI 3 application, for ASGI servers running on trio.

Mount Socket.IO (and Engine.IO endpoints, and plain WebSocket routes) in front of an
existing ASGI application (Starlette, Quart-trio, ...), python-socketio's ``ASGIApp``
shape::

    from starlette.applications import Starlette
    from volleyio.asgi import ASGIApp
    from volleyio.trio import SocketIOServer

    sio = SocketIOServer()
    web = Starlette(routes=[...])
    app = ASGIApp(sio, web)          # hypercorn --worker-class trio module:app

The Engine.IO core, the Socket.IO server and the session handlers are the ones
``sio.serve`` runs (same limits, same behaviour); only the transport differs: the ASGI
server parses HTTP and frames WebSocket messages. See :class:`ASGIApp` and
:class:`ASGIWebSocket` for what that changes.
"""

from __future__ import annotations

from ._app import ASGIApp
from ._websocket import ASGIWebSocket, WebSocketRoute

__all__ = ["ASGIApp", "ASGIWebSocket", "WebSocketRoute"]
