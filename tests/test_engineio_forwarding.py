"""The sans-I/O rules of cluster-wide Engine.IO sessions (volleyio.engineio.forwarding) and the
core's part (sid prefixes, release_poll)."""

from __future__ import annotations

import json

import msgpack
import pytest

from volleyio import VolleyError
from volleyio.engineio import forwarding as fw
from volleyio.engineio.server import EngineIOServer, HttpRequest, HttpResponse, PollParked, ServerConfig


def test_sid_prefix_and_owner() -> None:
    node = fw.new_node_id()
    assert "." not in node and len(node) == 12
    assert fw.owner_of(fw.sid_prefix(node) + "abc") == node
    assert fw.owner_of("plainsid") is None
    assert fw.owner_of(".x") is None
    with pytest.raises(ValueError):
        fw.sid_prefix("a.b")
    with pytest.raises(ValueError):
        fw.sid_prefix("")
    assert fw.node_channel("socket.io", node) == f"socket.io#eio-forward#{node}#"


def test_core_sids_carry_the_prefix() -> None:
    core = EngineIOServer(ServerConfig(sid_prefix="node1."))
    outcome = core.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling"}, {}), 0.0)
    assert isinstance(outcome, HttpResponse)
    sid = json.loads(outcome.body[1:])["sid"]
    assert sid.startswith("node1.") and fw.owner_of(sid) == "node1"


def test_release_poll_keeps_the_session_and_its_packets() -> None:
    core = EngineIOServer()
    opened = core.handle_request(HttpRequest("GET", "/", {"EIO": "4", "transport": "polling"}, {}), 0.0)
    assert isinstance(opened, HttpResponse)
    sid = json.loads(opened.body[1:])["sid"]
    get = HttpRequest("GET", "/", {"EIO": "4", "transport": "polling", "sid": sid}, {})
    assert isinstance(core.handle_request(get, 0.1), PollParked)
    assert core.release_poll(sid) is True
    assert core.release_poll(sid) is False
    # A second GET is not an overlap now; it gets what is sent next.
    assert isinstance(core.handle_request(get, 0.2), PollParked)
    core.send(sid, "hello")
    answer = core.poll_ready(sid, 0.3)
    assert answer is not None and answer.body == b"4hello"
    assert core.session(sid) is not None and core.session(sid).is_open  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "message",
    [
        fw.Forward(1, "n1", "POST", "/socket.io/", {"sid": "n2.x", "transport": "polling"}, {"host": "h"}, b"4hi"),
        fw.Forward(2, "n1", "GET", "/socket.io/", {"sid": "n2.x"}, {}, None, upgrade=True),
        fw.Reply(3, 200, [("Content-Type", "text/plain")], b"ok"),
        fw.Reply(4, 0, [], b"", raw=b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        fw.Cancel(5, "n1", "n2.x"),
        fw.WsIn(6, "n1", ["4text", b"\x01binary"]),
        fw.WsOut(7, ["2", b"\x00"], closing=True),
        fw.WsLost(8, "n1"),
    ],
)
def test_messages_round_trip(message: fw.ForwardMessage) -> None:
    assert fw.decode(fw.encode(message)) == message


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb([1, 2]),
        msgpack.packb({"t": "fwd"}),
        msgpack.packb({"t": "nope", "id": 1}),
        msgpack.packb({"t": "fwd", "id": 1, "o": "n", "m": "GET", "p": "/", "q": {"a": 1}, "h": {}, "b": None, "u": False}),
        msgpack.packb({"t": "rep", "id": 1, "s": 200, "h": [["a"]], "b": b"", "r": None}),
        msgpack.packb({"t": "rep", "id": 1, "s": 200, "h": [], "b": "text", "r": None}),
        msgpack.packb({"t": "win", "id": 1, "o": "n", "d": [1]}),
        msgpack.packb({"t": "wout", "id": 1, "c": False}),
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(fw.ForwardDecodeError) as info:
        fw.decode(data)
    assert isinstance(info.value, VolleyError)


def test_budget_bounds_requests_and_bytes() -> None:
    budget = fw.ForwardBudget(max_requests=3, max_bytes=100)
    assert budget.take(60)
    assert not budget.take(60)  # over the byte bound
    assert budget.take(40)
    assert budget.take(0)
    assert not budget.take(0)  # over the request bound
    budget.give_back(60)
    budget.give_back(40)
    budget.give_back(0)
    assert budget.requests == 0 and budget.bytes == 0
    assert budget.take(500)  # one body larger than the bound still passes alone (maxPayload bounds it)
    with pytest.raises(ValueError):
        fw.ForwardBudget(0, 1)


def test_unknown_sid_answer() -> None:
    status, headers, body = fw.unknown_sid_response()
    assert status == 400
    assert json.loads(body) == {"code": 1, "message": "Session ID unknown"}
    assert ("Content-Length", str(len(body))) in headers
