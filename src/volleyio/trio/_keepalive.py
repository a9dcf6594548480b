"""Keepalive pings for many connections from one task (no task or timer per connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._connection import WebSocketConnection



class Keepalive:
    """Ping every connection that was silent for ``interval``; fail it after ``timeout``.

    A connection is "silent" when nothing was read from it; a read proves the peer
    is alive as well as a pong does. One task wakes every ``min(interval, timeout)/4``
    and walks the set: O(connections) work per tick, no per-connection timers.
    """

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout
        self.connections: set[WebSocketConnection] = set()

    def add(self, ws: WebSocketConnection) -> None:
        ws._ka_reads = -1
        ws._ka_ping_at = None
        ws._ka_last = trio.current_time()
        self.connections.add(ws)

    def discard(self, ws: WebSocketConnection) -> None:
        self.connections.discard(ws)

    async def run(self) -> None:
        if self.interval is None:
            tick = 5.0  # no pings; still hand idle sockets back to their reader tasks
        else:
            values = [self.interval] + ([self.timeout] if self.timeout else [])
            tick = max(min(values) / 4, 0.01)
        while True:
            await trio.sleep(tick)
            self.check(trio.current_time())

    def check(self, now: float) -> None:
        for ws in list(self.connections):
            if ws.state != "OPEN":
                continue
            if ws._receiver_owns and not ws._inline_reader:
                # The application stopped receiving: let the reader task answer
                # pings and closes meanwhile.
                ws._wake_reader()
            if self.interval is None:
                continue
            reads = ws._n_reads
            if reads != ws._ka_reads:
                # Activity since the last look: the peer is alive.
                ws._ka_reads = reads
                ws._ka_last = now
                ws._ka_ping_at = None
                continue
            if ws._ka_ping_at is not None:
                if self.timeout is not None and now - ws._ka_ping_at >= self.timeout:
                    ws._keepalive_failed()
                continue
            if now - ws._ka_last >= self.interval:
                ws._ka_ping_at = now
                ws._n_pings += 1
                ws._proto.send_ping(b"ka")
                ws._queue_control(ws._proto.data_to_send())
