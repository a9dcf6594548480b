"""Keepalive bookkeeping: time is an argument, so every case is exact."""

from __future__ import annotations

import math

import pytest

from volleyio.websocket import Keepalive, KeepaliveAction


def test_ping_after_interval_of_silence_then_timeout() -> None:
    keepalive = Keepalive(interval=20, timeout=10, now=100.0)
    assert keepalive.deadline == 120.0
    assert keepalive.poll(119.9) is KeepaliveAction.NOTHING
    assert keepalive.poll(120.0) is KeepaliveAction.SEND_PING
    assert len(keepalive.ping_payload) == 4 and keepalive.awaiting_pong
    assert keepalive.deadline == 130.0
    assert keepalive.poll(129.0) is KeepaliveAction.NOTHING
    assert keepalive.poll(130.0) is KeepaliveAction.TIMED_OUT


def test_traffic_postpones_ping_and_clears_outstanding_ping() -> None:
    keepalive = Keepalive(interval=20, timeout=10, now=0.0)
    keepalive.data_received(15.0)
    assert keepalive.poll(20.0) is KeepaliveAction.NOTHING
    assert keepalive.deadline == 35.0
    assert keepalive.poll(35.0) is KeepaliveAction.SEND_PING
    keepalive.data_received(36.0)
    assert not keepalive.awaiting_pong
    assert keepalive.poll(45.0) is KeepaliveAction.NOTHING
    assert keepalive.deadline == 56.0


def test_pong_latency_measured_even_after_data_received() -> None:
    keepalive = Keepalive(interval=5, timeout=5, now=0.0)
    assert keepalive.poll(5.0) is KeepaliveAction.SEND_PING
    payload = keepalive.ping_payload
    keepalive.data_received(5.25)  # the bytes carrying the pong
    assert keepalive.pong_received(b"other", 5.25) is None
    assert keepalive.pong_received(payload, 5.25) == pytest.approx(0.25)
    assert keepalive.latency == pytest.approx(0.25)
    assert keepalive.pong_received(payload, 6.0) is None  # matched once


def test_fresh_payload_per_ping() -> None:
    keepalive = Keepalive(interval=1, timeout=1, now=0.0)
    payloads = set()
    for step in range(10):
        assert keepalive.poll(keepalive.deadline) is KeepaliveAction.SEND_PING
        payloads.add(keepalive.ping_payload)
        keepalive.data_received(keepalive.deadline - 0.5)
    assert len(payloads) == 10


def test_disabled() -> None:
    keepalive = Keepalive(interval=None, timeout=None, now=0.0)
    assert keepalive.deadline == math.inf
    assert keepalive.poll(1e12) is KeepaliveAction.NOTHING
    with pytest.raises(ValueError):
        Keepalive(interval=0, now=0.0)
    with pytest.raises(ValueError):
        Keepalive(timeout=-1, now=0.0)


def test_no_timeout_means_wait_forever_for_pong() -> None:
    keepalive = Keepalive(interval=1, timeout=None, now=0.0)
    assert keepalive.poll(1.0) is KeepaliveAction.SEND_PING
    assert keepalive.deadline == math.inf
    assert keepalive.poll(1e9) is KeepaliveAction.NOTHING
