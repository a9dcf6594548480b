"""The Socket.IO cluster protocol, sans-I/O (what Node's ``socket.io-adapter``
``ClusterAdapter`` / ``ClusterAdapterWithHeartbeat`` exchange between servers).

Each server (a *node*) has a random ``uid`` (16 hex digits, as Node's). Nodes exchange
:class:`ClusterMessage` objects ``{uid, nsp, type, data}`` through a broker; this module
knows their meaning and their encodings, the transports (``volleyio.trio``'s Redis
Streams and sharded pub/sub drivers) only move them:

* :class:`ClusterCore` builds the messages a node sends (:meth:`ClusterCore.broadcast`,
  ``ClusterCore.fetch_sockets``...), turns the messages it receives into
  ``ClusterEvent`` objects (:meth:`ClusterCore.receive`) and keeps the book of the
  node's own requests (FETCH_SOCKETS, SERVER_SIDE_EMIT with acks, BROADCAST with acks):
  how many nodes must still answer, what arrived, the deadline. Time is passed in
  (``now``); :meth:`ClusterCore.next_deadline` / :meth:`ClusterCore.handle_timers` drive
  the request timeouts, the heartbeats and the dead-node detection.
* Codecs, byte for byte as the Node packages write them: :func:`encode_stream_entry` /
  :func:`decode_stream_entry` (the fields of a Redis Streams entry, as
  ``@socket.io/redis-streams-adapter``: ``data`` is JSON, or base64 msgpack when binary is
  present), :func:`encode_msgpack` / :func:`decode_msgpack` (the whole message as msgpack:
  that adapter's pub/sub messages) and :func:`encode_sharded` / :func:`decode_sharded`
  (``@socket.io/redis-adapter``'s sharded adapter: JSON, or msgpack when binary is
  present).

Node liveness. A node is *seen* when any message of it arrives; volleyio nodes send
``INITIAL_HEARTBEAT`` when they start, a ``HEARTBEAT`` after ``heartbeat_interval``
seconds without publishing, and ``ADAPTER_CLOSE`` when they stop (as
``ClusterAdapterWithHeartbeat``). A node not heard of for ``heartbeat_timeout`` seconds is
dropped from :meth:`ClusterCore.nodes` (a :class:`NodeLeft` event). How many answers a
request waits for is given by the caller (``expected``; the Redis drivers ask Redis how
many servers subscribe to the namespace, as Node does); a node that leaves before
answering is no longer waited for.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import VolleyError
from .adapter import BroadcastOptions
from .cluster_messages import (
    EMITTER_UID,
    RESPONSE_TYPES,
    ClusterDecodeError,
    ClusterMessage,
    ClusterRequestTimeout,
    MessageType,
    decode_msgpack,
    decode_options,
    decode_sharded,
    decode_stream_entry,
    encode_msgpack,
    encode_options,
    encode_sharded,
    encode_stream_entry,
    new_uid,
)

__all__ = [
    "EMITTER_UID",
    "BroadcastAckProgress",
    "HeartbeatRequested",
    "ClusterCore",
    "ClusterDecodeError",
    "ClusterEvent",
    "ClusterMessage",
    "ClusterRequestTimeout",
    "MessageType",
    "NodeJoined",
    "NodeLeft",
    "RemoteBroadcast",
    "RemoteDisconnectSockets",
    "RemoteFetchSockets",
    "RemoteServerSideEmit",
    "RemoteSocketsJoin",
    "RemoteSocketsLeave",
    "RequestDone",
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

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RemoteBroadcast:
    """Another node broadcast ``packet`` (``{"type": 2, "data": [event, *args]}``): deliver
    it to the local targets of ``options``. With ``request_id``, the sender gathers
    acks: answer with ``ClusterCore.broadcast_client_count`` then one
    :meth:`ClusterCore.broadcast_ack` per client answer. ``offset`` is the stream entry
    id (Redis Streams) or ``""``."""

    namespace: str
    data: list[Any]
    options: BroadcastOptions
    sender: str
    request_id: str | None = None
    offset: str = ""


@dataclass(frozen=True, slots=True)
class RemoteSocketsJoin:
    namespace: str
    options: BroadcastOptions
    rooms: list[str]


@dataclass(frozen=True, slots=True)
class RemoteSocketsLeave:
    namespace: str
    options: BroadcastOptions
    rooms: list[str]


@dataclass(frozen=True, slots=True)
class RemoteDisconnectSockets:
    namespace: str
    options: BroadcastOptions
    close: bool


@dataclass(frozen=True, slots=True)
class RemoteFetchSockets:
    """Answer with :meth:`ClusterCore.fetch_sockets_response`."""

    namespace: str
    options: BroadcastOptions
    sender: str
    request_id: str


@dataclass(frozen=True, slots=True)
class RemoteServerSideEmit:
    """``data`` is ``[event, *args]``; with ``request_id`` the sender waits for one answer
    (``ClusterCore.server_side_emit_response``)."""

    namespace: str
    data: list[Any]
    sender: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestDone:
    """One of this node's requests ended: every expected node answered (``timed_out``
    False) or its deadline passed. ``responses``: for FETCH_SOCKETS the socket
    descriptions of every answer, for SERVER_SIDE_EMIT one value per node, for a
    BROADCAST with acks the ``(socket id or None, value)`` of every client answer."""

    request_id: str
    kind: MessageType
    responses: list[Any]
    timed_out: bool
    missing: int


@dataclass(frozen=True, slots=True)
class BroadcastAckProgress:
    """An answer to a BROADCAST with acks arrived (for callers that stream them)."""

    request_id: str
    sid: str | None
    value: Any


@dataclass(frozen=True, slots=True)
class HeartbeatRequested:
    """A node started (INITIAL_HEARTBEAT): publish ``ClusterCore.heartbeat`` so it
    learns about this one."""

    namespace: str
    uid: str


@dataclass(frozen=True, slots=True)
class NodeJoined:
    namespace: str
    uid: str


@dataclass(frozen=True, slots=True)
class NodeLeft:
    """``reason``: "heartbeat timeout" or "adapter close"."""

    namespace: str
    uid: str
    reason: str


ClusterEvent = Union[
    RemoteBroadcast,
    RemoteSocketsJoin,
    RemoteSocketsLeave,
    RemoteDisconnectSockets,
    RemoteFetchSockets,
    RemoteServerSideEmit,
    RequestDone,
    BroadcastAckProgress,
    HeartbeatRequested,
    NodeJoined,
    NodeLeft,
]


# ------------------------------------------------------------------------------ core


@dataclass(slots=True)
class _Request:
    kind: MessageType
    namespace: str
    expected: int  # nodes that must still answer (count), adjusted when nodes leave
    deadline: float
    responded: set[str] = field(default_factory=set)
    responses: list[Any] = field(default_factory=list)
    expected_clients: int = 0  # BROADCAST with acks: announced by BROADCAST_CLIENT_COUNT
    acks: int = 0


class ClusterCore:
    """The cluster state of one node (every namespace of one server).

    Outgoing: each builder returns the :class:`ClusterMessage` to publish (the driver
    picks the channel: ``is_response`` messages go to the requester only) and,
    for requests, registers the request. Incoming: :meth:`receive` returns the events.
    Call ``published`` after each publication (heartbeat scheduling).
    """

    def __init__(
        self,
        uid: str | None = None,
        *,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 10.0,
        request_timeout: float = 5.0,
        max_requests: int = 10_000,
    ) -> None:
        if heartbeat_timeout <= heartbeat_interval:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval")
        self.uid = uid or new_uid()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.request_timeout = request_timeout
        self.max_requests = max_requests
        self._nodes: dict[str, dict[str, float]] = {}  # namespace -> uid -> last seen
        self._namespaces: dict[str, float] = {}  # namespace -> when this node last published
        self._requests: dict[str, _Request] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._counter = itertools.count()

    # ------------------------------------------------------------------ liveness

    def nodes(self, namespace: str = "/") -> frozenset[str]:
        """The other nodes seen on ``namespace`` and not timed out."""
        return frozenset(self._nodes.get(namespace, ()))

    def add_namespace(self, namespace: str, now: float) -> ClusterMessage:
        """Start taking part in ``namespace``: returns the INITIAL_HEARTBEAT to publish."""
        self._namespaces.setdefault(namespace, now)
        return self._message(MessageType.INITIAL_HEARTBEAT, namespace)

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(self._namespaces)

    def close(self) -> list[ClusterMessage]:
        """Leaving the cluster: ADAPTER_CLOSE for every namespace."""
        return [self._message(MessageType.ADAPTER_CLOSE, nsp) for nsp in self._namespaces]

    def published(self, namespace: str, now: float) -> None:
        if namespace in self._namespaces:
            self._namespaces[namespace] = now

    # ------------------------------------------------------------------ outgoing

    def _message(self, kind: MessageType, namespace: str, data: dict[str, Any] | None = None) -> ClusterMessage:
        return ClusterMessage(kind, self.uid, namespace, data)

    @staticmethod
    def is_response(message: ClusterMessage) -> bool:
        return message.type in RESPONSE_TYPES

    @staticmethod
    def is_ephemeral(message: ClusterMessage) -> bool:
        """Requests and heartbeats: never stored (``@socket.io/redis-streams-adapter`` sends
        them over pub/sub, not the stream)."""
        kind = message.type
        if kind is MessageType.BROADCAST:
            return message.data is not None and "requestId" in message.data
        return kind not in (
            MessageType.SOCKETS_JOIN,
            MessageType.SOCKETS_LEAVE,
            MessageType.DISCONNECT_SOCKETS,
        )

    def broadcast(self, namespace: str, data: list[Any], options: BroadcastOptions) -> ClusterMessage:
        """A BROADCAST of the event ``data`` (``[event, *args]``)."""
        return self._message(
            MessageType.BROADCAST,
            namespace,
            {"packet": {"type": 2, "data": data}, "opts": encode_options(options)},
        )

    def broadcast_with_ack(
        self, namespace: str, data: list[Any], options: BroadcastOptions, expected: int, now: float, timeout: float
    ) -> tuple[str, ClusterMessage]:
        """A BROADCAST whose receivers' acks come back (``expected``: other nodes)."""
        request_id = self._register(MessageType.BROADCAST, namespace, expected, now + timeout)
        message = self._message(
            MessageType.BROADCAST,
            namespace,
            {
                "packet": {"type": 2, "data": data},
                "requestId": request_id,
                "opts": encode_options(options, {"timeout": max(0, round(timeout * 1000))}),
            },
        )
        return request_id, message

    def sockets_join(self, namespace: str, options: BroadcastOptions, rooms: Iterable[str]) -> ClusterMessage:
        return self._message(
            MessageType.SOCKETS_JOIN, namespace, {"opts": encode_options(options), "rooms": list(rooms)}
        )

    def sockets_leave(self, namespace: str, options: BroadcastOptions, rooms: Iterable[str]) -> ClusterMessage:
        return self._message(
            MessageType.SOCKETS_LEAVE, namespace, {"opts": encode_options(options), "rooms": list(rooms)}
        )

    def disconnect_sockets(self, namespace: str, options: BroadcastOptions, close: bool) -> ClusterMessage:
        return self._message(
            MessageType.DISCONNECT_SOCKETS, namespace, {"opts": encode_options(options), "close": close}
        )

    def fetch_sockets(
        self, namespace: str, options: BroadcastOptions, expected: int, now: float, timeout: float | None = None
    ) -> tuple[str, ClusterMessage]:
        deadline = now + (self.request_timeout if timeout is None else timeout)
        request_id = self._register(MessageType.FETCH_SOCKETS, namespace, expected, deadline)
        return request_id, self._message(
            MessageType.FETCH_SOCKETS, namespace, {"opts": encode_options(options), "requestId": request_id}
        )

    def server_side_emit(self, namespace: str, data: list[Any]) -> ClusterMessage:
        return self._message(MessageType.SERVER_SIDE_EMIT, namespace, {"packet": data})

    def server_side_emit_with_ack(
        self, namespace: str, data: list[Any], expected: int, now: float, timeout: float | None = None
    ) -> tuple[str, ClusterMessage]:
        deadline = now + (self.request_timeout if timeout is None else timeout)
        request_id = self._register(MessageType.SERVER_SIDE_EMIT, namespace, expected, deadline)
        return request_id, self._message(
            MessageType.SERVER_SIDE_EMIT, namespace, {"requestId": request_id, "packet": data}
        )

    # responses (to ``event.sender``)

    def fetch_sockets_response(self, namespace: str, request_id: str, sockets: list[dict[str, Any]]) -> ClusterMessage:
        """``sockets``: ``{"id", "handshake", "rooms": [...], "data"}`` per local socket."""
        return self._message(
            MessageType.FETCH_SOCKETS_RESPONSE, namespace, {"requestId": request_id, "sockets": sockets}
        )

    def server_side_emit_response(self, namespace: str, request_id: str, value: Any) -> ClusterMessage:
        return self._message(
            MessageType.SERVER_SIDE_EMIT_RESPONSE, namespace, {"requestId": request_id, "packet": value}
        )

    def broadcast_client_count(self, namespace: str, request_id: str, count: int) -> ClusterMessage:
        return self._message(
            MessageType.BROADCAST_CLIENT_COUNT, namespace, {"requestId": request_id, "clientCount": count}
        )

    def broadcast_ack(self, namespace: str, request_id: str, value: Any, sid: str | None = None) -> ClusterMessage:
        """One client's answer (its first ack argument, as Node sends). ``sid``: an extra
        field volleyio nodes add so the requester knows which socket answered (Node
        ignores it)."""
        data: dict[str, Any] = {"requestId": request_id, "packet": value}
        if sid is not None:
            data["sid"] = sid
        return self._message(MessageType.BROADCAST_ACK, namespace, data)

    def heartbeat(self, namespace: str) -> ClusterMessage:
        return self._message(MessageType.HEARTBEAT, namespace)

    # ------------------------------------------------------------------ requests

    def _register(self, kind: MessageType, namespace: str, expected: int, deadline: float) -> str:
        if len(self._requests) >= self.max_requests:
            raise VolleyError(f"too many cluster requests in flight ({self.max_requests})")
        request_id = new_uid()
        self._requests[request_id] = _Request(kind, namespace, max(0, expected), deadline)
        heapq.heappush(self._deadlines, (deadline, next(self._counter), request_id))
        return request_id

    def pending(self, request_id: str) -> bool:
        return request_id in self._requests

    def cancel(self, request_id: str) -> None:
        """Forget a request (its caller stopped waiting); late answers are ignored."""
        self._requests.pop(request_id, None)

    def check(self, request_id: str) -> RequestDone | None:
        """The request's end if it needs no (more) answers (for example ``expected`` 0)."""
        request = self._requests.get(request_id)
        if request is not None and self._complete(request):
            return self._finish(request_id, False)
        return None

    @staticmethod
    def _complete(request: _Request) -> bool:
        if len(request.responded) < request.expected:
            return False
        return request.kind is not MessageType.BROADCAST or request.acks >= request.expected_clients

    def _finish(self, request_id: str, timed_out: bool) -> RequestDone:
        request = self._requests.pop(request_id)
        missing = max(0, request.expected - len(request.responded))
        if request.kind is MessageType.BROADCAST:
            missing = max(missing, request.expected_clients - request.acks)
        return RequestDone(request_id, request.kind, request.responses, timed_out, missing)

    # ------------------------------------------------------------------ incoming

    def receive(self, message: ClusterMessage, now: float, offset: str = "") -> list[ClusterEvent]:
        """What a message from the broker means for this node. ``offset``: the stream
        entry id the message was read at (Redis Streams), carried by :class:`RemoteBroadcast`
        (connection state recovery keys missed packets by it)."""
        if message.uid == self.uid:
            return []
        events: list[ClusterEvent] = []
        nsp = message.nsp
        if message.uid != EMITTER_UID:
            if message.type is MessageType.ADAPTER_CLOSE:
                self._remove_node(nsp, message.uid, "adapter close", events)
                return events
            seen = self._nodes.setdefault(nsp, {})
            if message.uid not in seen:
                events.append(NodeJoined(nsp, message.uid))
            seen[message.uid] = now
        if nsp not in self._namespaces:
            return events  # a namespace this server does not have
        kind = message.type
        data = message.data or {}
        try:
            if kind is MessageType.INITIAL_HEARTBEAT:
                events.append(HeartbeatRequested(nsp, message.uid))
            elif kind is MessageType.BROADCAST:
                packet = data.get("packet")
                if not isinstance(packet, dict) or not isinstance(packet.get("data"), list) or not packet["data"]:
                    raise ClusterDecodeError("BROADCAST without an event")
                request_id = data.get("requestId")
                events.append(
                    RemoteBroadcast(
                        nsp,
                        list(packet["data"]),
                        decode_options(nsp, data.get("opts")),
                        message.uid,
                        str(request_id) if request_id is not None else None,
                        offset,
                    )
                )
            elif kind is MessageType.SOCKETS_JOIN:
                events.append(RemoteSocketsJoin(nsp, decode_options(nsp, data.get("opts")), _rooms(data)))
            elif kind is MessageType.SOCKETS_LEAVE:
                events.append(RemoteSocketsLeave(nsp, decode_options(nsp, data.get("opts")), _rooms(data)))
            elif kind is MessageType.DISCONNECT_SOCKETS:
                events.append(
                    RemoteDisconnectSockets(nsp, decode_options(nsp, data.get("opts")), bool(data.get("close")))
                )
            elif kind is MessageType.FETCH_SOCKETS:
                events.append(
                    RemoteFetchSockets(
                        nsp, decode_options(nsp, data.get("opts")), message.uid, _request_id(data)
                    )
                )
            elif kind is MessageType.SERVER_SIDE_EMIT:
                packet = data.get("packet")
                if not isinstance(packet, list) or not packet:
                    raise ClusterDecodeError("SERVER_SIDE_EMIT without an event")
                request_id = data.get("requestId")
                events.append(
                    RemoteServerSideEmit(
                        nsp, list(packet), message.uid, str(request_id) if request_id is not None else None
                    )
                )
            elif kind in RESPONSE_TYPES:
                self._on_response(message, data, events)
            # HEARTBEAT: being seen is all
        except ClusterDecodeError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ClusterDecodeError(f"malformed {kind.name}: {exc}") from None
        return events

    def _on_response(self, message: ClusterMessage, data: dict[str, Any], events: list[ClusterEvent]) -> None:
        request_id = _request_id(data)
        request = self._requests.get(request_id)
        if request is None:
            return
        kind = message.type
        if kind is MessageType.FETCH_SOCKETS_RESPONSE and request.kind is MessageType.FETCH_SOCKETS:
            sockets = data.get("sockets")
            if not isinstance(sockets, list):
                raise ClusterDecodeError("sockets must be a list")
            if message.uid not in request.responded:
                request.responded.add(message.uid)
                request.responses.extend(sockets)
        elif kind is MessageType.SERVER_SIDE_EMIT_RESPONSE and request.kind is MessageType.SERVER_SIDE_EMIT:
            if message.uid not in request.responded:
                request.responded.add(message.uid)
                request.responses.append(data.get("packet"))
        elif kind is MessageType.BROADCAST_CLIENT_COUNT and request.kind is MessageType.BROADCAST:
            count = data.get("clientCount")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ClusterDecodeError("clientCount must be a count")
            if message.uid not in request.responded:
                request.responded.add(message.uid)
                request.expected_clients += count
        elif kind is MessageType.BROADCAST_ACK and request.kind is MessageType.BROADCAST:
            sid = data.get("sid")
            sid = sid if isinstance(sid, str) else None
            request.acks += 1
            request.responses.append((sid, data.get("packet")))
            events.append(BroadcastAckProgress(request_id, sid, data.get("packet")))
        else:
            return
        if self._complete(request):
            events.append(self._finish(request_id, False))

    def _remove_node(self, namespace: str, uid: str, reason: str, events: list[ClusterEvent]) -> None:
        seen = self._nodes.get(namespace)
        if seen is None or seen.pop(uid, None) is None:
            if reason != "adapter close":
                return
        else:
            events.append(NodeLeft(namespace, uid, reason))
        for request_id, request in list(self._requests.items()):
            if request.namespace == namespace and uid not in request.responded and request.expected > 0:
                request.expected -= 1
                if self._complete(request):
                    events.append(self._finish(request_id, False))

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """The earliest of: a request deadline, a heartbeat due, a node's timeout."""
        while self._deadlines and self._deadlines[0][2] not in self._requests:
            heapq.heappop(self._deadlines)
        candidates = [self._deadlines[0][0]] if self._deadlines else []
        candidates.extend(last + self.heartbeat_interval for last in self._namespaces.values())
        for seen in self._nodes.values():
            if seen:
                candidates.append(min(seen.values()) + self.heartbeat_timeout)
        return min(candidates) if candidates else None

    def handle_timers(self, now: float) -> tuple[list[ClusterEvent], list[ClusterMessage]]:
        """Expire requests and silent nodes; returns the events and the heartbeats due."""
        events: list[ClusterEvent] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, request_id = heapq.heappop(self._deadlines)
            if request_id in self._requests:
                events.append(self._finish(request_id, True))
        for namespace, seen in self._nodes.items():
            for uid, last in list(seen.items()):
                if now - last > self.heartbeat_timeout:
                    self._remove_node(namespace, uid, "heartbeat timeout", events)
        heartbeats = []
        for namespace, last in self._namespaces.items():
            if now - last >= self.heartbeat_interval:
                heartbeats.append(self.heartbeat(namespace))
                self._namespaces[namespace] = now
        return events, heartbeats


def _rooms(data: dict[str, Any]) -> list[str]:
    rooms = data.get("rooms")
    if isinstance(rooms, str):
        return [rooms]
    if not isinstance(rooms, list) or not all(isinstance(room, str) for room in rooms):
        raise ClusterDecodeError("rooms must be a list of strings")
    return rooms


def _request_id(data: dict[str, Any]) -> str:
    request_id = data.get("requestId")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        raise ClusterDecodeError("requestId missing")
    return str(request_id)

