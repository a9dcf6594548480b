"""Forwarding Engine.IO requests between cluster nodes through Redis (no sticky sessions).

The rules (sid prefixes, message formats, bounds, who answers what) are in
:mod:`volleyio.engineio.forwarding`; this module does the Redis I/O and runs both sides:

* as a **non-owner** (:meth:`ClusterForwarder.forward_polling`,
  :meth:`ClusterForwarder.forward_websocket`): sends the request to the owner's channel
  and writes the reply, watching the client meanwhile; relays a WebSocket's frames;
* as an **owner**: feeds forwarded requests to its Engine.IO core exactly as the local
  driver does (parked GETs are answered by one flusher task, no task per GET) and runs
  one relay task per forwarded WebSocket.

Everything this node publishes goes through one task and one Redis connection, in
order, so the frames of one WebSocket and the replies to one session keep their order.
The outgoing queue is bounded (``max_queue`` messages): relays wait for room
(backpressure into the Engine.IO buffer, then the application), requests that find it
full are answered 503.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .. import websocket as _ws
from ..engineio import forwarding as fw
from ..engineio.packets import PreparedPacket
from ..engineio.server import (
    AcceptWebSocket,
    DisconnectReason,
    HttpRequest,
    HttpResponse,
    PollParked,
    ReadBody,
    RefuseWebSocket,
    WebSocketChannel,
)
from ._cluster import ClusterConnectError
from ._connection import WebSocketConnection
from ._errors import BaseExceptionGroup, ConnectionClosed
from ._http import Request
from ._http_loop import TOO_LARGE, HttpConnection, Takeover, render_h11_response, send_bytes

if TYPE_CHECKING:
    from ._engineio_server import EngineIOApp

__all__ = ["ClusterForwarder", "ClusterPolling"]

logger = logging.getLogger("volleyio.trio.cluster_polling")

_MAX_STASH = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClusterPolling:
    """Options of cluster-wide sessions (``SocketIOServer(cluster_polling=ClusterPolling(...))``).

    ``forward_timeout``: seconds a forwarded POST or WebSocket upgrade waits for the
    owner's reply (a forwarded GET waits the ping interval longer); then it is answered
    400 "Session ID unknown", as is a request whose owner is not subscribed any more.
    ``max_requests`` / ``max_bytes``: requests and POST-body bytes one node may have in
    flight to the others (beyond: ``503``, ``Retry-After: 1``). ``max_queue``: messages
    waiting to be published to Redis (relays wait for room; requests that find it full
    are answered 503). ``ws_queue``: the owner's batches waiting for the client of one
    relayed WebSocket (beyond: that WebSocket is closed with 1013).
    """

    forward_timeout: float = 10.0
    max_requests: int = 10_000
    max_bytes: int = 8 << 20
    max_queue: int = 4096
    ws_queue: int = 256

    def __post_init__(self) -> None:
        if self.forward_timeout <= 0 or min(self.max_requests, self.max_bytes, self.max_queue, self.ws_queue) < 1:
            raise ValueError("cluster polling bounds must be positive")


@dataclass(slots=True)
class _Pending:
    """A request this node forwarded and waits an answer for."""

    owner: str
    size: int
    reply: fw.Reply | None = None
    failed: bool = False
    event: trio.Event = field(default_factory=trio.Event)
    # A relayed WebSocket: the owner's frames (bounded; full = the relay is closed).
    frames: trio.MemorySendChannel[fw.WsOut] | None = None


@dataclass(slots=True)
class _ParkedGet:
    rid: int
    origin: str


class ClusterForwarder:
    """One node's forwarding of Engine.IO requests (see the module documentation).

    ``client_factory()`` returns a new coredis client (an async context manager);
    ``node`` is this node's id (the prefix of its sids). ``forward_timeout``: seconds a
    forwarded POST or upgrade waits for its reply (a GET waits the ping interval more);
    ``max_requests`` / ``max_bytes``: what may be in flight (beyond: 503);
    ``max_queue``: messages waiting to be published; ``ws_queue``: owner batches waiting
    for a relayed WebSocket's client (beyond: that WebSocket is closed 1013).
    """

    def __init__(
        self,
        app: EngineIOApp,
        client_factory: Callable[[], Any],
        node: str,
        *,
        channel_prefix: str = "socket.io",
        forward_timeout: float = 10.0,
        max_requests: int = 10_000,
        max_bytes: int = 8 << 20,
        max_queue: int = 4096,
        ws_queue: int = 256,
    ) -> None:
        self.app = app
        self.node = node
        self.channel_prefix = channel_prefix
        self.forward_timeout = forward_timeout
        self.budget = fw.ForwardBudget(max_requests, max_bytes)
        self.ws_queue = ws_queue
        self._client_factory = client_factory
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[str, bytes, int]](max_queue)
        # Owner side.
        self._parked: dict[str, _ParkedGet] = {}
        self._ready: set[str] = set()
        self._ready_event = trio.Event()
        self._relays: dict[tuple[str, int], WebSocketChannel] = {}
        self._relay_wakers: dict[tuple[str, int], trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.started = trio.Event()
        #: Sids of the WebSockets this node relays to their owners.
        self.relayed: set[str] = set()
        #: Counters (forwarded requests, served for others, refused 503, timed out).
        self.stats = {"forwarded": 0, "served": 0, "refused": 0, "timed_out": 0, "owner_gone": 0, "queue_full": 0}

    def owns(self, sid: str) -> bool:
        owner = fw.owner_of(sid)
        return owner is None or owner == self.node

    # ------------------------------------------------------------------ Redis I/O

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe to this node's channel and publish the queue, until cancelled; after a
        lost Redis connection, reconnect with backoff (what was in flight fails: 400)."""
        started = False
        delay = 0.1
        while True:
            try:
                await self._connection(task_status if not started else trio.TASK_STATUS_IGNORED)
            except BaseException as exc:  # noqa: BLE001 - sorted below
                # Cancelled (the server stops) wins over what the client library raises
                # while its connections are torn down.
                cancelled: BaseException | None
                rest: BaseException | None
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, rest = exc.split(trio.Cancelled)
                else:
                    cancelled, rest = (exc, None) if isinstance(exc, trio.Cancelled) else (None, exc)
                if cancelled is not None:
                    raise cancelled from None
                if rest is not None and not isinstance(rest, Exception):
                    raise
                if not self.started.is_set():
                    raise ClusterConnectError(f"cluster polling cannot reach Redis: {exc!r}") from None
                logger.warning("cluster polling %s: Redis connection lost (%r); retry in %.2fs", self.node, exc, delay)
            started = self.started.is_set()
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _connection(self, task_status: trio.TaskStatus[None]) -> None:
        from coredis.retry import NoRetryPolicy

        channel = fw.node_channel(self.channel_prefix, self.node)
        try:
            async with self._client_factory() as client:
                await client.ping()
                async with client.pubsub(retry_policy=NoRetryPolicy(), ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel)
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        nursery.start_soon(self._publisher, client)
                        nursery.start_soon(self._flusher)
                        self.started.set()
                        task_status.started()
                        while True:
                            item = await pubsub.get_message(ignore_subscribe_messages=True)
                            if item is None or item.get("type") != "message":
                                continue
                            data = item["data"]
                            try:
                                message = fw.decode(data if isinstance(data, bytes) else str(data).encode())
                            except fw.ForwardDecodeError as exc:
                                logger.warning("dropped a forwarding message: %s", exc)
                                continue
                            self._received(message)
        finally:
            self._nursery = None
            for pending in self._pending.values():
                pending.failed = True
                pending.event.set()

    async def _publisher(self, client: Any) -> None:
        async for node, data, rid in self._out_recv:
            receivers = await client.publish(fw.node_channel(self.channel_prefix, node), data)
            if receivers == 0 and rid:
                pending = self._pending.get(rid)
                if pending is not None:  # the owner is not subscribed: gone
                    self.stats["owner_gone"] += 1
                    pending.failed = True
                    pending.event.set()

    def _queue(self, node: str, message: fw.ForwardMessage, rid: int = 0) -> bool:
        item = (node, fw.encode(message), rid)
        try:
            self._out_send.send_nowait(item)
        except trio.WouldBlock:
            if rid or self._nursery is None:
                return False  # a new request: refused (503)
            # A reply, cancel or close notice is never dropped: there are at most as many
            # as the requests in flight (bounded by every node's ForwardBudget).
            self.stats["queue_full"] += 1
            self._nursery.start_soon(self._out_send.send, item)
        return True

    def _received(self, message: fw.ForwardMessage) -> None:
        if isinstance(message, fw.Reply):
            pending = self._pending.get(message.rid)
            if pending is not None:
                pending.reply = message
                pending.event.set()
        elif isinstance(message, fw.WsOut):
            pending = self._pending.get(message.rid)
            if pending is not None and pending.frames is not None:
                try:
                    pending.frames.send_nowait(message)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pending.failed = True
                    pending.event.set()
        elif isinstance(message, fw.Forward):
            self.stats["served"] += 1
            self._serve(message)
        elif isinstance(message, fw.Cancel):
            parked = self._parked.get(message.sid)
            if parked is not None and parked.rid == message.rid and parked.origin == message.origin:
                del self._parked[message.sid]
                self.app.core.poll_cancelled(message.sid, trio.current_time())
                self.app._pump_events()
        elif isinstance(message, fw.WsIn):
            channel = self._relays.get((message.origin, message.rid))
            if channel is not None:
                now = trio.current_time()
                for item in message.messages:
                    channel.receive(item, now)
                self.app._pump_events()
        elif isinstance(message, fw.WsLost):
            key = (message.origin, message.rid)
            channel = self._relays.pop(key, None)
            if channel is not None:
                self._lose(channel)
                waker = self._relay_wakers.get(key)
                if waker is not None:
                    waker.set()

    # ------------------------------------------------------------------ owner side

    def _serve(self, message: fw.Forward) -> None:
        app = self.app
        core = app.core
        request = HttpRequest(message.method, message.path, message.query, message.headers,
                              websocket_upgrade=message.upgrade)
        sid = message.query.get("sid", "")
        now = trio.current_time()
        if message.method == "GET" and not message.upgrade and self._parked.pop(sid, None) is not None:
            # A GET parked for another node, and the same session GETs again: the client
            # only does that when the first one failed (its node died, the balancer
            # retried), so the first one is dropped; it took no packets.
            core.release_poll(sid)
        app._driving += 1
        try:
            outcome = core.handle_request(request, now)
        finally:
            app._driving -= 1
        app._pump_events()
        origin = message.origin
        if isinstance(outcome, HttpResponse):
            app._flushed(sid)
            self._reply(origin, message.rid, outcome)
        elif isinstance(outcome, PollParked):
            self._parked[outcome.sid] = _ParkedGet(message.rid, origin)
            core.set_poll_waker(outcome.sid, lambda: self._wake_parked(outcome.sid))
            self._wake_parked(outcome.sid)
        elif isinstance(outcome, ReadBody):
            session = app._sessions.get(outcome.sid)
            if (
                session is not None and app._on_event is None and session._inbox
                and len(session._inbox) >= app.max_queue and self._nursery is not None
            ):
                # Backpressure as for a local POST: the body waits until the handler has
                # room (the client sends no other POST before this one is answered).
                self._nursery.start_soon(self._post_later, session, outcome, message)
                return
            self._post(outcome, message)
        elif isinstance(outcome, RefuseWebSocket):
            self._queue(origin, fw.Reply(message.rid, 0, raw=outcome.raw_response()))
        else:
            assert isinstance(outcome, AcceptWebSocket)
            channel = outcome.channel
            if channel is None or outcome.close_immediately or self._nursery is None:
                self._queue(origin, fw.Reply(message.rid, 0, raw=b""))  # accepted-and-closed: just close
                if channel is not None:
                    channel.connection_lost(now, DisconnectReason.TRANSPORT_CLOSE)
                    app._pump_events()
                return
            key = (origin, message.rid)
            self._relays[key] = channel
            wake = self._relay_wakers[key] = trio.Event()
            self._queue(origin, fw.Reply(message.rid, 101, [(k, v) for k, v in outcome.headers]))
            self._nursery.start_soon(self._relay, key, channel, wake)

    def _post(self, outcome: ReadBody, message: fw.Forward) -> None:
        app = self.app
        core = app.core
        body = message.body or b""
        now = trio.current_time()
        app._driving += 1
        try:
            if len(body) > outcome.limit:
                response = core.post_too_large(outcome.sid, now)
            else:
                response = core.post_body(outcome.sid, body, now)
        finally:
            app._driving -= 1
        app._pump_events()
        self._reply(message.origin, message.rid, response)

    async def _post_later(self, session: Any, outcome: ReadBody, message: fw.Forward) -> None:
        await session._wait_room()
        self._post(outcome, message)

    def _reply(self, origin: str, rid: int, response: HttpResponse) -> None:
        self._queue(origin, fw.Reply(rid, response.status, [(k, v) for k, v in response.headers], response.body))

    def _wake_parked(self, sid: str) -> None:
        self._ready.add(sid)
        self._ready_event.set()

    async def _flusher(self) -> None:
        """Answers the forwarded GETs that have packets (one task for all)."""
        core = self.app.core
        while True:
            await self._ready_event.wait()
            self._ready_event = trio.Event()
            await trio.lowlevel.checkpoint()  # what the same round produces leaves together
            ready, self._ready = self._ready, set()
            for sid in ready:
                parked = self._parked.get(sid)
                if parked is None:
                    continue
                answer = core.poll_ready(sid, trio.current_time())
                if answer is None:
                    continue
                del self._parked[sid]
                self._reply(parked.origin, parked.rid, answer)
                self.app._flushed(sid)
            self.app._pump_events()

    def _lose(self, channel: WebSocketChannel) -> None:
        if channel.lost:
            return
        now = trio.current_time()
        session = channel._session
        if session._websocket is channel and session.is_open:
            self.app.core.close(channel.sid, now)
        channel.connection_lost(now, DisconnectReason.TRANSPORT_CLOSE)
        self.app._pump_events()

    async def _relay(self, key: tuple[str, int], channel: WebSocketChannel, wake: trio.Event) -> None:
        """Publishes what the core has for a forwarded WebSocket, in order."""
        origin, rid = key

        def waker() -> None:
            self._relay_wakers[key].set()

        channel.set_waker(waker)
        try:
            while not channel.lost:
                frames, closing = channel.take_outgoing()
                if frames or closing:
                    messages = [f.websocket_message if isinstance(f, PreparedPacket) else f for f in frames]
                    data = fw.encode(fw.WsOut(rid, messages, closing))
                    await self._out_send.send((origin, data, 0))  # backpressure
                    self.app._flushed(channel.sid)
                    if closing:
                        channel.connection_lost(trio.current_time(), DisconnectReason.TRANSPORT_CLOSE)
                        self.app._pump_events()
                        return
                    continue
                await self._relay_wakers[key].wait()
                self._relay_wakers[key] = trio.Event()
        finally:
            channel.set_waker(None)
            self._relays.pop(key, None)
            self._relay_wakers.pop(key, None)
            with trio.CancelScope(shield=True):
                self._lose(channel)

    # ------------------------------------------------------------------ non-owner side

    def _start(self, owner: str, message: fw.Forward, size: int) -> _Pending | None:
        if self._nursery is None or not self.budget.take(size):
            self.stats["refused"] += 1
            return None
        pending = _Pending(owner, size)
        self._pending[message.rid] = pending
        if not self._queue(owner, message, message.rid):
            self._finish(message.rid)
            self.stats["refused"] += 1
            return None
        self.stats["forwarded"] += 1
        return pending

    def _finish(self, rid: int) -> None:
        pending = self._pending.pop(rid, None)
        if pending is not None:
            self.budget.give_back(pending.size)

    async def _unknown(self, http: HttpConnection, head_only: bool, close: bool = False) -> None:
        status, headers, body = fw.unknown_sid_response()
        await http.respond(status, headers, body, head_only=head_only, close=close)

    async def forward_polling(
        self, http: HttpConnection, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> None:
        """Serve a polling request of a session another node owns."""
        owner = fw.owner_of(query.get("sid", ""))
        assert owner is not None
        head_only = method == "HEAD"
        body: bytes | None = None
        if method == "POST":
            read = await http.read_body(self.app.config.max_payload)
            if isinstance(read, str):
                if read == TOO_LARGE:
                    await http.respond(413, [("Content-Length", "0")], b"", close=True)
                return  # truncated or stalled: no answer, as for a local session
            body = read
        else:
            await http.discard_body(self.app.config.max_payload)
        rid = next(self._ids)
        message = fw.Forward(rid, self.node, method, path, query, headers, body)
        pending = self._start(owner, message, len(body or b""))
        if pending is None:
            await http.respond(503, [("Content-Length", "0"), ("Retry-After", "1")], b"", head_only=head_only)
            return
        timeout = self.forward_timeout
        if method == "GET":
            timeout += self.app.config.ping_interval_ms / 1000
        try:
            gone, stash = await self._wait_watching(http, pending, timeout)
        finally:
            self._finish(rid)
        if gone:
            if pending.reply is None and method == "GET":
                self._queue(owner, fw.Cancel(rid, self.node, query.get("sid", "")))
            return
        reply = pending.reply
        if reply is None:
            if not pending.failed:
                self.stats["timed_out"] += 1
                if method == "GET":
                    self._queue(owner, fw.Cancel(rid, self.node, query.get("sid", "")))
            await self._unknown(http, head_only)
        else:
            await http.respond(reply.status, reply.headers, reply.body, head_only=head_only,
                               close=self.app._shutting_down)
        if stash:
            http.unread(stash)

    async def _wait_watching(self, http: HttpConnection, pending: _Pending, timeout: float) -> tuple[bool, bytes]:
        """Wait for the reply (or failure, or ``timeout``) while noticing a client that
        leaves; returns (client gone, pipelined bytes read meanwhile)."""
        stash = bytearray()
        gone = False
        stream = http.stream

        async def watch(scope: trio.CancelScope) -> None:
            nonlocal gone
            while len(stash) < _MAX_STASH:
                try:
                    data = await stream.receive_some(16384)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    gone = True
                    scope.cancel()
                    return
                stash.extend(data)
            await trio.sleep_forever()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, nursery.cancel_scope)
                await pending.event.wait()
                nursery.cancel_scope.cancel()
        return gone, bytes(stash)

    async def forward_websocket(
        self,
        http: HttpConnection,
        request: Request,
        accepted: _ws.HandshakeAccepted,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
    ) -> Takeover | None:
        """A WebSocket (upgrade) of a session another node owns: ask the owner, then relay."""
        owner = fw.owner_of(query.get("sid", ""))
        assert owner is not None
        rid = next(self._ids)
        message = fw.Forward(rid, self.node, "GET", path, query, headers, None, upgrade=True)
        pending = self._start(owner, message, 0)
        if pending is None:
            await http.respond(503, [("Content-Length", "0"), ("Retry-After", "1")], b"", close=True)
            return None
        send, receive = trio.open_memory_channel[fw.WsOut](self.ws_queue)
        pending.frames = send
        with trio.move_on_after(self.forward_timeout):
            await pending.event.wait()
        reply = pending.reply
        if reply is None or reply.status != 101:
            self._finish(rid)
            if reply is None:
                if not pending.failed:
                    self.stats["timed_out"] += 1
                await self._unknown(http, False, close=True)
            elif reply.raw:
                await http.respond_raw(reply.raw)
            elif reply.raw is not None:  # accepted-and-closed on the owner (a second WebSocket)
                await self._unknown(http, False, close=True)
            else:
                await http.respond(reply.status, reply.headers, reply.body, close=True)
            return None
        pending.event = trio.Event()  # now set when the relay must stop (queue overflow)
        leftover = http.detach()
        return self._relay_client(http.stream, request, accepted, leftover, reply, rid, owner, receive, query["sid"])

    async def _relay_client(
        self,
        stream: trio.abc.Stream,
        request: Request,
        accepted: _ws.HandshakeAccepted,
        leftover: bytes,
        reply: fw.Reply,
        rid: int,
        owner: str,
        frames: trio.MemoryReceiveChannel[fw.WsOut],
        sid: str,
    ) -> None:
        pending = self._pending[rid]
        self.relayed.add(sid)
        try:
            switching = render_h11_response(accepted.response, b"", tuple(reply.headers))
            if not await send_bytes(stream, switching):
                return
            app = self.app
            ws = WebSocketConnection(
                stream, client=False, limits=app.limits, proto=accepted.connection, request=request,
                initial_data=leftover,
            )
            nursery_owner = app._nursery
            ws._nursery = nursery_owner
            ws._start_reader()
            try:
                async with trio.open_nursery() as nursery:

                    async def from_owner() -> None:
                        async for batch in frames:
                            for item in batch.messages:
                                await ws.send(item)
                            if batch.closing:
                                await ws.close(1000, "")
                                break
                        nursery.cancel_scope.cancel()

                    async def overflow() -> None:
                        await pending.event.wait()
                        await ws.close(1013, "relay queue full")
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(from_owner)
                    nursery.start_soon(overflow)
                    try:
                        while True:
                            messages = await ws.receive_many()
                            data = fw.encode(fw.WsIn(rid, self.node, list(messages)))
                            await self._out_send.send((owner, data, 0))  # backpressure on the client
                    except ConnectionClosed:
                        pass
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await ws.close(1001, "going away")
                    except Exception:  # noqa: BLE001 - best effort
                        pass
        finally:
            self.relayed.discard(sid)
            self._finish(rid)
            self._queue(owner, fw.WsLost(rid, self.node))
