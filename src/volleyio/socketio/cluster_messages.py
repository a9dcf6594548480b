"""Cluster messages and their encodings (the wire format of Node's Socket.IO cluster
adapters), sans-I/O. :mod:`volleyio.socketio.cluster` re-exports every public name.

* :func:`encode_stream_entry` / :func:`decode_stream_entry`: the fields of a Redis Streams
  entry, as ``@socket.io/redis-streams-adapter`` writes them (``data`` is JSON, or base64
  msgpack when binary is present);
* :func:`encode_msgpack` / :func:`decode_msgpack`: the whole message as msgpack (that
  adapter's pub/sub messages);
* :func:`encode_sharded` / :func:`decode_sharded`: ``@socket.io/redis-adapter``'s sharded
  adapter (JSON, or msgpack when binary is present).

Decoding is linear in the input and bounded (the JSON decoder of the Socket.IO parser,
msgpack's own limits); anything malformed raises :class:`ClusterDecodeError`.
"""

from __future__ import annotations

import base64
import enum
import importlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import VolleyError
from .adapter import BroadcastOptions
from .packets import DEFAULT_MAX_DEPTH, DEFAULT_MAX_INTEGER_DIGITS, _dumps, _has_binary, _loads

__all__ = [
    "EMITTER_UID",
    "RESPONSE_TYPES",
    "ClusterDecodeError",
    "ClusterMessage",
    "ClusterRequestTimeout",
    "MessageType",
    "decode_msgpack",
    "decode_options",
    "decode_sharded",
    "decode_stream_entry",
    "encode_msgpack",
    "encode_options",
    "encode_sharded",
    "encode_stream_entry",
    "new_uid",
]

#: The uid of ``@socket.io/*-emitter`` processes: they publish but are not servers.
EMITTER_UID = "emitter"


class MessageType(enum.IntEnum):
    """Node's ``MessageType`` (socket.io-adapter ``cluster-adapter``)."""

    INITIAL_HEARTBEAT = 1
    HEARTBEAT = 2
    BROADCAST = 3
    SOCKETS_JOIN = 4
    SOCKETS_LEAVE = 5
    DISCONNECT_SOCKETS = 6
    FETCH_SOCKETS = 7
    FETCH_SOCKETS_RESPONSE = 8
    SERVER_SIDE_EMIT = 9
    SERVER_SIDE_EMIT_RESPONSE = 10
    BROADCAST_CLIENT_COUNT = 11
    BROADCAST_ACK = 12
    ADAPTER_CLOSE = 13


#: Responses: sent to the requester only.
RESPONSE_TYPES = frozenset(
    {
        MessageType.FETCH_SOCKETS_RESPONSE,
        MessageType.SERVER_SIDE_EMIT_RESPONSE,
        MessageType.BROADCAST_CLIENT_COUNT,
        MessageType.BROADCAST_ACK,
    }
)
#: Types whose ``data`` may hold binary (then msgpack instead of JSON, as Node).
_MAY_CONTAIN_BINARY = frozenset(
    {
        MessageType.BROADCAST,
        MessageType.FETCH_SOCKETS_RESPONSE,
        MessageType.SERVER_SIDE_EMIT,
        MessageType.SERVER_SIDE_EMIT_RESPONSE,
        MessageType.BROADCAST_ACK,
    }
)


class ClusterDecodeError(VolleyError):
    """A cluster message could not be decoded (it is dropped, the node goes on)."""


class ClusterRequestTimeout(VolleyError):
    """A cluster request (fetch_sockets, server_side_emit with acks...) did not get every
    answer in time. ``responses`` holds what did arrive; ``missing`` how many nodes did
    not answer."""

    def __init__(self, message: str, responses: list[Any], missing: int) -> None:
        super().__init__(message)
        self.responses = responses
        self.missing = missing


def new_uid() -> str:
    """A node id as Node makes them: 8 random bytes in hex."""
    return secrets.token_hex(8)


@dataclass(slots=True)
class ClusterMessage:
    """``uid`` is the sender; ``data`` is absent (``None``) for heartbeats."""

    type: MessageType
    uid: str
    nsp: str
    data: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": self.uid, "nsp": self.nsp, "type": int(self.type)}
        if self.data is not None:
            out["data"] = self.data
        return out


# ------------------------------------------------------------------------- options


def encode_options(options: BroadcastOptions, flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Node's ``encodeOptions``: ``{"rooms": [...], "except": [...], "flags": {...}}``
    (socket ids are rooms: ``except_sids`` go to ``except``)."""
    out_flags: dict[str, Any] = {}
    if options.volatile:
        out_flags["volatile"] = True
    if flags:
        out_flags.update(flags)
    return {
        "rooms": sorted(options.rooms),
        "except": sorted(options.except_rooms | options.except_sids),
        "flags": out_flags,
    }


def _str_list(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ClusterDecodeError("rooms must be a list of strings")
    return frozenset(value)


def decode_options(namespace: str, opts: Any) -> BroadcastOptions:
    """Node's ``decodeOptions`` into a :class:`BroadcastOptions` (``volatile`` from the flags)."""
    if not isinstance(opts, dict):
        raise ClusterDecodeError("opts must be an object")
    flags = opts.get("flags") or {}
    if not isinstance(flags, dict):
        raise ClusterDecodeError("flags must be an object")
    return BroadcastOptions(
        namespace,
        rooms=_str_list(opts.get("rooms")),
        except_rooms=_str_list(opts.get("except")),
        volatile=bool(flags.get("volatile")),
    )


# --------------------------------------------------------------------------- codecs


def _ext_hook(code: int, data: bytes) -> Any:
    # notepack.io writes ``undefined`` as fixext1 type 0 (and Dates as type 0xff/-1).
    if code == 0:
        return None
    raise ClusterDecodeError(f"unsupported msgpack extension type {code}")


def _msgpack() -> Any:
    try:
        return importlib.import_module("msgpack")
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("cluster messages with binary need msgpack: pip install 'volleyio[redis]'") from exc


def _unpack(raw: bytes) -> Any:
    msgpack = _msgpack()
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_ext_hook)
    except ClusterDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types
        raise ClusterDecodeError(f"invalid msgpack: {exc}") from None


def _pack(value: Any) -> bytes:
    msgpack = _msgpack()
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode cluster message: {exc}") from None


def _json(text: str) -> Any:
    try:
        return _loads(text, DEFAULT_MAX_DEPTH, DEFAULT_MAX_INTEGER_DIGITS)
    except VolleyError as exc:
        raise ClusterDecodeError(str(exc)) from None


def _has_bin(message: ClusterMessage) -> bool:
    return message.type in _MAY_CONTAIN_BINARY and message.data is not None and _has_binary(
        message.data, DEFAULT_MAX_DEPTH
    )


def _message_from(value: Any) -> ClusterMessage:
    if not isinstance(value, dict):
        raise ClusterDecodeError("a cluster message is an object")
    uid, nsp, kind, data = value.get("uid"), value.get("nsp"), value.get("type"), value.get("data")
    if not isinstance(uid, str) or not isinstance(nsp, str):
        raise ClusterDecodeError("uid and nsp must be strings")
    if isinstance(kind, str) and kind.isdigit() and len(kind) < 4:
        kind = int(kind)
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ClusterDecodeError("type must be a number")
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise ClusterDecodeError(f"unknown message type {kind}") from None
    if data is not None and not isinstance(data, dict):
        raise ClusterDecodeError("data must be an object")
    return ClusterMessage(message_type, uid, nsp, data)


def encode_stream_entry(message: ClusterMessage) -> dict[str, str]:
    """The fields of an XADD entry, as ``@socket.io/redis-streams-adapter`` writes them:
    ``uid``, ``nsp``, ``type`` (decimal) and ``data`` (JSON; base64 of msgpack when the
    data holds binary)."""
    fields = {"uid": message.uid, "nsp": message.nsp, "type": str(int(message.type))}
    if message.data is not None:
        if _has_bin(message):
            fields["data"] = base64.b64encode(_pack(message.data)).decode("ascii")
        else:
            fields["data"] = _dumps(message.data, DEFAULT_MAX_DEPTH)
    return fields


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ClusterDecodeError("stream field is not UTF-8") from None
    if isinstance(value, str):
        return value
    raise ClusterDecodeError("stream field must be a string")


def decode_stream_entry(fields: Mapping[Any, Any]) -> ClusterMessage:
    """Inverse of :func:`encode_stream_entry` (keys and values as ``str`` or ``bytes``)."""
    values = {_text(key): value for key, value in fields.items()}
    out: dict[str, Any] = {
        "uid": _text(values.get("uid", b"")),
        "nsp": _text(values.get("nsp", b"")),
        "type": _text(values.get("type", b"")),
    }
    raw = values.get("data")
    if raw:
        text = _text(raw)
        if text.startswith("{"):
            out["data"] = _json(text)
        else:
            try:
                packed = base64.b64decode(text, validate=True)
            except ValueError:
                raise ClusterDecodeError("data is neither JSON nor base64") from None
            out["data"] = _unpack(packed)
    return _message_from(out)


def encode_msgpack(message: ClusterMessage) -> bytes:
    """The whole message as msgpack (``@socket.io/redis-streams-adapter``'s pub/sub
    messages: requests, their responses)."""
    return _pack(message.as_dict())


def decode_msgpack(raw: bytes) -> ClusterMessage:
    return _message_from(_unpack(raw))


def encode_sharded(message: ClusterMessage) -> bytes:
    """``@socket.io/redis-adapter`` (sharded): the whole message as JSON, or as msgpack
    when its data holds binary."""
    if _has_bin(message):
        return _pack(message.as_dict())
    return _dumps(message.as_dict(), DEFAULT_MAX_DEPTH).encode("utf-8")


def decode_sharded(raw: bytes) -> ClusterMessage:
    if raw[:1] == b"{":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ClusterDecodeError("message is not UTF-8") from None
        return _message_from(_json(text))
    return _message_from(_unpack(raw))
