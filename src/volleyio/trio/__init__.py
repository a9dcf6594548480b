"""volleyio on trio: ``serve()`` and ``connect()`` around the sans-I/O WebSocket core.

Server::

    async def echo(ws: WebSocketConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, echo, "127.0.0.1", 8765)

Client::

    async with connect("ws://127.0.0.1:8765/") as ws:
        await ws.send("hello")
        print(await ws.receive())
"""

from __future__ import annotations

from ._broadcast import broadcast
from ._client import backoff_delay, connect, parse_url, reconnecting
from ._cluster import ClusterAdapter, ClusterConnectError, ClusterUnavailableError
from ._cluster_api import RemoteSocket
from ._connection import FANOUT_LIMIT, Limits, MessageHandler, Statistics, WebSocketConnection
from ._engineio_client import (
    EngineIOClientConnection,
    EngineIOConnectError,
    EngineIOUpgradeError,
    connect_engineio,
)
from ._engineio_server import EngineIOApp, EngineIORequest, EngineIOSession, serve_engineio
from ._admin import AdminUI
from ._errors import (
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    EngineIOClosed,
    InvalidURI,
)
from ._http import Request, Response
from ._http_loop import HttpConnection, RequestHead
from ._redis import RedisStreamsAdapter, ShardedRedisAdapter
from ._server import HttpMount, WebSocketServer, serve
from ._socketio_client import (
    SendBufferFullError,
    SocketIOClient,
    SocketIOConnectError,
    SocketIODisconnectedError,
    connect_socketio,
)
from ._socketio_server import (
    NO_ACK,
    Ack,
    AckError,
    ConnectionRefusedError,
    DisconnectedError,
    Handshake,
    Namespace,
    Socket,
    SocketIOApp,
    SocketIOServer,
)

__all__ = [
    "FANOUT_LIMIT",
    "NO_ACK",
    "Ack",
    "AckError",
    "AdminUI",
    "ClusterAdapter",
    "ClusterConnectError",
    "ClusterUnavailableError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionRefusedError",
    "DisconnectedError",
    "EngineIOApp",
    "EngineIOClientConnection",
    "EngineIOClosed",
    "EngineIOConnectError",
    "EngineIORequest",
    "EngineIOSession",
    "EngineIOUpgradeError",
    "Handshake",
    "HttpConnection",
    "HttpMount",
    "InvalidURI",
    "Limits",
    "MessageHandler",
    "Namespace",
    "RedisStreamsAdapter",
    "RemoteSocket",
    "Request",
    "RequestHead",
    "Response",
    "SendBufferFullError",
    "ShardedRedisAdapter",
    "Socket",
    "SocketIOApp",
    "SocketIOClient",
    "SocketIOConnectError",
    "SocketIODisconnectedError",
    "SocketIOServer",
    "Statistics",
    "WebSocketConnection",
    "WebSocketServer",
    "backoff_delay",
    "broadcast",
    "connect",
    "connect_engineio",
    "connect_socketio",
    "parse_url",
    "reconnecting",
    "serve",
    "serve_engineio",
]
