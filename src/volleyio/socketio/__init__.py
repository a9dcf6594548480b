"""Socket.IO v5, sans-I/O: the packet codec, the server core and the room adapters."""

from __future__ import annotations

from .adapter import Adapter, BroadcastOptions, InMemoryAdapter
from .packets import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Packet,
    PacketType,
    SocketIODecodeError,
    SocketIOEncodeError,
    encode_packet,
    is_payload_valid,
)
from .server import (
    DEFER,
    AckReceived,
    ConnectAttempt,
    ConnectRefused,
    ConnectRequested,
    EngineIOTransport,
    EventReceived,
    NamespaceConfig,
    SocketConnected,
    SocketDisconnected,
    SocketIOConfig,
    SocketIOServer,
)

__all__ = [
    "DEFER",
    "MAX_ACK_ID",
    "RESERVED_EVENTS",
    "AckReceived",
    "Adapter",
    "BroadcastOptions",
    "ConnectAttempt",
    "ConnectRefused",
    "ConnectRequested",
    "Decoder",
    "EngineIOTransport",
    "EventReceived",
    "InMemoryAdapter",
    "NamespaceConfig",
    "Packet",
    "PacketType",
    "SocketConnected",
    "SocketDisconnected",
    "SocketIOConfig",
    "SocketIODecodeError",
    "SocketIOEncodeError",
    "SocketIOServer",
    "encode_packet",
    "is_payload_valid",
]
