"""RFC 6455 / RFC 7692 WebSocket, sans-I/O: h11 requests and bytes in, events and bytes out.

Server::

    result = server_handshake(request, subprotocols=["chat"])   # request: h11.Request
    if isinstance(result, HandshakeRejected):
        send(result.response, result.body); close()
    else:
        send(result.response)                                    # the 101
        ws = result.connection
        trailing = h11_conn.trailing_data[0]                     # bytes read past the request
        if trailing:                                             # (b"" would mean EOF)
            ws.receive_data(trailing)
        while True:
            for event in ws.events(): ...                        # TextMessage, Ping, CloseReceived, ...
            write(ws.data_to_send())
            if ws.closed: close TCP; break
            ws.receive_data(read())                              # b"" on EOF

Client: ``hs = ClientHandshake("example.com")``, send ``hs.request``, then
``hs.receive_response(response).connection``.

Public names: see ``__all__``; every one is documented where it is defined.
"""

from __future__ import annotations

from ..errors import ConnectionClosedError, HandshakeError, ProtocolError
from .connection import (
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PART_OVERHEAD,
    CloseInfo,
    ConnectionState,
    Role,
    WebSocketConnection,
    encode_close_payload,
    encode_message_frames,
    is_valid_close_code,
)
from .events import (
    BinaryMessage,
    CloseReceived,
    ConnectionClosed,
    Event,
    MessageChunk,
    Ping,
    Pong,
    TextMessage,
)
from .extensions import (
    ClientExtensionFactory,
    Extension,
    ExtensionOffer,
    ExtensionParams,
    ServerExtensionFactory,
    is_token,
    parse_extensions_header,
    serialize_extension,
)
from .keepalive import Keepalive, KeepaliveAction
from .handshake import (
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_REQUEST_LINE,
    WEBSOCKET_GUID,
    ClientHandshake,
    ClientHandshakeResult,
    HandshakeAccepted,
    HandshakeRejected,
    OriginPolicy,
    RequestHeadGuard,
    SubprotocolPolicy,
    compute_accept,
    generate_key,
    is_same_origin,
    rejection_response,
    server_handshake,
)

__all__ = [
    # errors
    "ConnectionClosedError",
    "HandshakeError",
    "ProtocolError",
    # connection
    "WebSocketConnection",
    "Role",
    "ConnectionState",
    "CloseInfo",
    "encode_message_frames",
    "encode_close_payload",
    "is_valid_close_code",
    "OP_CONTINUATION",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_FRAGMENTS",
    "PART_OVERHEAD",
    # events
    "Event",
    "TextMessage",
    "BinaryMessage",
    "MessageChunk",
    "Ping",
    "Pong",
    "CloseReceived",
    "ConnectionClosed",
    # extensions
    "Extension",
    "ServerExtensionFactory",
    "ClientExtensionFactory",
    "ExtensionOffer",
    "ExtensionParams",
    "parse_extensions_header",
    "serialize_extension",
    "is_token",
    # handshake
    "server_handshake",
    "HandshakeAccepted",
    "HandshakeRejected",
    "OriginPolicy",
    "SubprotocolPolicy",
    "ClientHandshake",
    "ClientHandshakeResult",
    "rejection_response",
    "compute_accept",
    "generate_key",
    "is_same_origin",
    "RequestHeadGuard",
    "WEBSOCKET_GUID",
    "DEFAULT_MAX_REQUEST_LINE",
    "DEFAULT_MAX_HEADER_BLOCK",
    "DEFAULT_MAX_HEADER_COUNT",
    # keepalive
    "Keepalive",
    "KeepaliveAction",
]
