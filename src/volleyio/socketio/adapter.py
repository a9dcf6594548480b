"""Rooms: which namespace sockets are in which rooms, and who a broadcast reaches.

The server core talks to rooms only through :class:`Adapter`, so a broker-backed adapter
can replace :class:`InMemoryAdapter` (pass it as ``adapter=`` to the core, or to
``volleyio.trio.SocketIOServer``).

Clusters (``volleyio.trio.RedisStreamsAdapter``, ``ShardedRedisAdapter``): membership
stays local, each process knows the rooms of its own sockets (as Node's Redis adapters),
kept by an :class:`InMemoryAdapter` subclass. The cluster traffic is not this
interface's job: the trio layer publishes broadcasts and cluster requests through the
sans-I/O protocol of ``volleyio.socketio.cluster`` and, for each broadcast another node
published, calls ``SocketIOServer.deliver_broadcast(messages, options)`` on its core,
which delivers to the local targets without publishing again.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Adapter", "BroadcastOptions", "InMemoryAdapter"]

Deliver = Callable[[str, Sequence[str | bytes]], None]


@dataclass(frozen=True, slots=True)
class BroadcastOptions:
    """Who gets a broadcast: members of any of ``rooms`` (all sockets of the namespace
    when empty), minus members of ``except_rooms``, minus ``except_sids``."""

    namespace: str
    rooms: frozenset[str] = frozenset()
    except_rooms: frozenset[str] = frozenset()
    except_sids: frozenset[str] = frozenset()
    volatile: bool = False


class Adapter(abc.ABC):
    """Room membership of namespace sockets (a socket id is unique across namespaces)."""

    @abc.abstractmethod
    def join(self, namespace: str, sid: str, room: str) -> None: ...

    @abc.abstractmethod
    def leave(self, namespace: str, sid: str, room: str) -> None: ...

    @abc.abstractmethod
    def leave_all(self, namespace: str, sid: str) -> None:
        """Called when the socket disconnects: it must end up in no room."""

    @abc.abstractmethod
    def rooms_of(self, namespace: str, sid: str) -> frozenset[str]: ...

    @abc.abstractmethod
    def members(self, namespace: str, room: str) -> frozenset[str]: ...

    @abc.abstractmethod
    def sockets(self, namespace: str) -> frozenset[str]:
        """Every socket of the namespace known to this adapter."""

    def targets(self, options: BroadcastOptions) -> set[str]:
        """Local socket ids a broadcast reaches."""
        if options.rooms:
            selected: set[str] = set()
            for room in options.rooms:
                selected |= self.members(options.namespace, room)
        else:
            selected = set(self.sockets(options.namespace))
        for room in options.except_rooms:
            selected -= self.members(options.namespace, room)
        selected -= options.except_sids
        return selected

    def broadcast(self, messages: Sequence[str | bytes], options: BroadcastOptions, deliver: Deliver) -> int:
        """Deliver the same encoded ``messages`` to every target; returns how many."""
        targets = self.targets(options)
        for sid in targets:
            deliver(sid, messages)
        return len(targets)


class InMemoryAdapter(Adapter):
    """Rooms as in-memory sets (the embedded default)."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = {}  # namespace -> room -> sids
        self._socket_rooms: dict[str, dict[str, set[str]]] = {}  # namespace -> sid -> rooms

    def join(self, namespace: str, sid: str, room: str) -> None:
        self._rooms.setdefault(namespace, {}).setdefault(room, set()).add(sid)
        self._socket_rooms.setdefault(namespace, {}).setdefault(sid, set()).add(room)

    def leave(self, namespace: str, sid: str, room: str) -> None:
        rooms = self._rooms.get(namespace, {})
        members = rooms.get(room)
        if members is not None:
            members.discard(sid)
            if not members:
                del rooms[room]
        socket_rooms = self._socket_rooms.get(namespace, {}).get(sid)
        if socket_rooms is not None:
            socket_rooms.discard(room)

    def leave_all(self, namespace: str, sid: str) -> None:
        for room in list(self._socket_rooms.get(namespace, {}).get(sid, ())):
            self.leave(namespace, sid, room)
        self._socket_rooms.get(namespace, {}).pop(sid, None)

    def rooms_of(self, namespace: str, sid: str) -> frozenset[str]:
        return frozenset(self._socket_rooms.get(namespace, {}).get(sid, ()))

    def members(self, namespace: str, room: str) -> frozenset[str]:
        return frozenset(self._rooms.get(namespace, {}).get(room, ()))

    def sockets(self, namespace: str) -> frozenset[str]:
        return frozenset(self._socket_rooms.get(namespace, {}))

    def all_rooms(self, namespace: str) -> Iterable[str]:
        return list(self._rooms.get(namespace, {}))
