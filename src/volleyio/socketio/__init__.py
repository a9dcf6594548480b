"""Socket.IO v5, sans-I/O: the packet codec, the server and client cores and the room adapters."""

from __future__ import annotations

from .acks import NO_ACK, AckError, ack_arguments, ack_result
from .adapter import Adapter, BroadcastOptions, InMemoryAdapter
from .cluster import ClusterCore, ClusterDecodeError, ClusterMessage, ClusterRequestTimeout, MessageType
from .client import SendBufferFullError, SocketIOClient, SocketIOConnectError, SocketIODisconnectedError
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
from .recovery import RecoveryConfig, RecoveryStore
from .server import (
    DEFER,
    INVALID_NAMESPACE,
    AckReceived,
    ConnectAttempt,
    ConnectRefused,
    ConnectRequested,
    ConnectionRefusedError,
    DisconnectedError,
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
    "NO_ACK",
    "AckError",
    "ack_arguments",
    "ack_result",
    "INVALID_NAMESPACE",
    "MAX_ACK_ID",
    "RESERVED_EVENTS",
    "AckReceived",
    "Adapter",
    "BroadcastOptions",
    "ClusterCore",
    "ClusterDecodeError",
    "ClusterMessage",
    "ClusterRequestTimeout",
    "ConnectAttempt",
    "ConnectRefused",
    "ConnectRequested",
    "ConnectionRefusedError",
    "DisconnectedError",
    "Decoder",
    "EngineIOTransport",
    "EventReceived",
    "InMemoryAdapter",
    "MessageType",
    "NamespaceConfig",
    "Packet",
    "PacketType",
    "RecoveryConfig",
    "RecoveryStore",
    "SendBufferFullError",
    "SocketConnected",
    "SocketDisconnected",
    "SocketIOClient",
    "SocketIOConfig",
    "SocketIOConnectError",
    "SocketIODecodeError",
    "SocketIODisconnectedError",
    "SocketIOEncodeError",
    "SocketIOServer",
    "encode_packet",
    "is_payload_valid",
]
