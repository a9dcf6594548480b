"""Keepalive bookkeeping (ping interval / pong timeout) with the clock passed in.

The I/O layer owns the clock and the timer; this class only decides. Typical use::

    keepalive = Keepalive(interval=20.0, timeout=20.0, now=trio.current_time())
    # on every chunk read from the peer:
    keepalive.data_received(trio.current_time())
    # on a Pong event:
    keepalive.pong_received(event.payload, trio.current_time())
    # the timer task sleeps until keepalive.deadline, then:
    action = keepalive.poll(trio.current_time())
    if action is KeepaliveAction.SEND_PING: ws.send_ping(keepalive.ping_payload)
    elif action is KeepaliveAction.TIMED_OUT: ws.close(1011, "keepalive ping timeout")

Policy: a ping goes out once ``interval`` seconds passed without hearing anything from
the peer (any received bytes prove it alive, so busy connections cost no pings); the
peer then has ``timeout`` seconds to send *anything* -- normally the pong -- before
the connection is declared dead. ``interval=None`` disables pings.
"""

from __future__ import annotations

import enum
import math
import secrets

__all__ = ["Keepalive", "KeepaliveAction"]


class KeepaliveAction(enum.Enum):
    NOTHING = "nothing"  # not due yet; sleep until ``deadline`` again
    SEND_PING = "send_ping"  # send a ping with ``ping_payload`` now
    TIMED_OUT = "timed_out"  # the peer stayed silent after a ping: close 1011 / abort


class Keepalive:
    """Decides when to ping and when a silent peer is dead; never reads a clock itself."""

    __slots__ = ("interval", "timeout", "_last_heard", "_ping_sent_at", "_last_ping_at", "ping_payload", "latency")

    def __init__(self, interval: float | None = 20.0, timeout: float | None = 20.0, *, now: float) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("interval must be positive or None")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        self.interval = interval
        self.timeout = timeout
        self._last_heard = now
        self._ping_sent_at: float | None = None  # set while a ping is outstanding
        self._last_ping_at: float | None = None  # kept after data arrives, for latency
        #: The payload of the outstanding ping (random, so its pong can be matched).
        self.ping_payload = b""
        #: Round-trip time of the last matched pong, in the clock's units (None before).
        self.latency: float | None = None

    @property
    def awaiting_pong(self) -> bool:
        """True while a ping is outstanding and nothing was heard since it was sent."""
        return self._ping_sent_at is not None

    @property
    def deadline(self) -> float:
        """When :meth:`poll` should next be called (``math.inf`` when never)."""
        if self._ping_sent_at is not None:
            return math.inf if self.timeout is None else self._ping_sent_at + self.timeout
        if self.interval is None:
            return math.inf
        return self._last_heard + self.interval

    def data_received(self, now: float) -> None:
        """The peer sent something: it is alive, and the ping clock restarts."""
        self._last_heard = now
        self._ping_sent_at = None

    def pong_received(self, payload: bytes, now: float) -> float | None:
        """Record a pong; return the round-trip time if it answers our outstanding ping.

        (Call :meth:`data_received` for the bytes that carried it as usual; this
        only matches the payload for the latency measurement.)
        """
        self.data_received(now)
        sent_at = self._last_ping_at
        if sent_at is not None and payload == self.ping_payload:
            self._last_ping_at = None  # match each ping once
            self.latency = now - sent_at
            return self.latency
        return None

    def poll(self, now: float) -> KeepaliveAction:
        """What to do at time ``now`` (call it when ``now >= deadline``; earlier is harmless)."""
        if now < self.deadline:
            return KeepaliveAction.NOTHING
        if self._ping_sent_at is not None:
            return KeepaliveAction.TIMED_OUT
        self._ping_sent_at = self._last_ping_at = now
        self.ping_payload = secrets.token_bytes(4)
        return KeepaliveAction.SEND_PING
