"""The sans-I/O cluster core (volleyio.socketio.cluster): codecs checked against the
encoders the Node adapters use (@msgpack/msgpack, notepack.io, JSON), and the request
bookkeeping, heartbeats and dead-node detection with the time passed in."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest

from _trio_support import JS_DIR, node_path, require_peer
from volleyio.socketio import BroadcastOptions
from volleyio.socketio.cluster import (
    ClusterCore,
    ClusterDecodeError,
    ClusterMessage,
    HeartbeatRequested,
    MessageType,
    NodeJoined,
    NodeLeft,
    RemoteBroadcast,
    RemoteFetchSockets,
    RemoteServerSideEmit,
    RequestDone,
    decode_msgpack,
    decode_sharded,
    decode_stream_entry,
    encode_msgpack,
    encode_sharded,
    encode_stream_entry,
)


def _mark(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"$bin": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list):
        return [_mark(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark(v) for k, v in value.items()}
    return value


def _unmark(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return base64.b64decode(value["$bin"])
        return {k: _unmark(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmark(v) for v in value]
    return value


def node_codec(request: dict[str, Any]) -> dict[str, Any]:
    node = node_path()
    require_peer(node is not None and (JS_DIR / "node_modules" / "notepack.io").is_dir(), "node with tests/js deps")
    assert node is not None
    out = subprocess.run(
        [node, "cluster_codec.js"], input=json.dumps(request), cwd=JS_DIR, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


BROADCAST = ClusterMessage(
    MessageType.BROADCAST,
    "0123456789abcdef",
    "/",
    {
        "packet": {"type": 2, "data": ["news", {"n": 1, "ok": True, "x": None}, "é", 1.5, -3]},
        "opts": {"rooms": ["room1"], "except": ["r2"], "flags": {"volatile": True}},
    },
)
BINARY = ClusterMessage(
    MessageType.BROADCAST,
    "0123456789abcdef",
    "/chat",
    {"packet": {"type": 2, "data": ["bin", b"\x00\x01\xff", {"deep": [b"abc"]}]}, "opts": {"rooms": [], "except": [], "flags": {}}},
)
MESSAGES = [
    BROADCAST,
    BINARY,
    ClusterMessage(MessageType.HEARTBEAT, "fedcba9876543210", "/"),
    ClusterMessage(MessageType.SOCKETS_JOIN, "u", "/", {"opts": {"rooms": ["a"], "except": [], "flags": {}}, "rooms": ["b", "c"]}),
    ClusterMessage(MessageType.SERVER_SIDE_EMIT_RESPONSE, "u", "/", {"requestId": "r1", "packet": b"\x01"}),
]


@pytest.mark.interop
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{m.type.name}-{m.nsp}")
def test_node_decodes_what_we_encode(message: ClusterMessage) -> None:
    answer = node_codec(
        {
            "decode": {
                "msgpack": base64.b64encode(encode_msgpack(message)).decode(),
                "sharded": base64.b64encode(encode_sharded(message)).decode(),
                "stream": encode_stream_entry(message),
            }
        }
    )
    expected = message.as_dict()
    for key in ("msgpack", "sharded", "stream"):
        assert _unmark(answer[key]) == expected, key


@pytest.mark.interop
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{m.type.name}-{m.nsp}")
def test_we_decode_what_node_encodes(message: ClusterMessage) -> None:
    answer = node_codec({"encode": _mark(message.as_dict())})
    expected = message.as_dict()
    assert decode_msgpack(base64.b64decode(answer["msgpack"])).as_dict() == expected
    assert decode_sharded(base64.b64decode(answer["notepack"])).as_dict() == expected
    assert decode_stream_entry(answer["stream"]).as_dict() == expected
    # The sharded adapter writes JSON when there is no binary: same bytes as ours.
    if b"\x01" not in encode_msgpack(message) or message.type is MessageType.HEARTBEAT:
        has_binary = any(isinstance(v, bytes) for v in _walk(expected))
        if not has_binary:
            assert decode_sharded(answer["json"].encode()).as_dict() == expected
            assert encode_sharded(message) == answer["json"].encode()
            assert encode_stream_entry(message) == answer["stream"]


def _walk(value: Any) -> list[Any]:
    out = [value]
    if isinstance(value, dict):
        for v in value.values():
            out.extend(_walk(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_walk(v))
    return out


def test_notepack_undefined_decodes_as_none() -> None:
    # notepack.io writes ``undefined`` as fixext1 type 0: {"uid":"u","nsp":"/","type":12,"data":{"requestId":"r","packet":undefined}}
    raw = bytes.fromhex("84a3756964a175a36e7370a12fa474797065 0ca464617461 82a9726571756573744964a172a67061636b6574 d40000".replace(" ", ""))
    message = decode_sharded(raw)
    assert message.type is MessageType.BROADCAST_ACK and message.data == {"requestId": "r", "packet": None}


@pytest.mark.parametrize(
    "raw",
    [b"{", b"{}", b'{"uid":"u","nsp":"/","type":99}', b'{"uid":1,"nsp":"/","type":2}', b"\xc1", b"\x92\x01",
     b'{"uid":"u","nsp":"/","type":3,"data":[1]}', b"[" * 5000 + b"]" * 5000],
)
def test_bad_input_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(ClusterDecodeError):
        decode_sharded(raw)


def test_bad_stream_entries() -> None:
    with pytest.raises(ClusterDecodeError):
        decode_stream_entry({b"uid": b"u", b"nsp": b"/", b"type": b"3", b"data": b"!!notbase64"})
    with pytest.raises(ClusterDecodeError):
        decode_stream_entry({b"uid": b"\xff", b"nsp": b"/", b"type": b"3"})
    core = ClusterCore("me")
    core.add_namespace("/", 0.0)
    bad = ClusterMessage(MessageType.BROADCAST, "peer", "/", {"packet": {"type": 2, "data": []}, "opts": {}})
    with pytest.raises(ClusterDecodeError):
        core.receive(bad, 0.0)


def test_broadcast_round_trip_through_core() -> None:
    a, b = ClusterCore("a"), ClusterCore("b")
    for core in (a, b):
        core.add_namespace("/", 0.0)
    options = BroadcastOptions("/", frozenset({"r"}), frozenset({"x"}), frozenset({"sid1"}), volatile=True)
    message = a.broadcast("/", ["ev", 1, b"\x02"], options)
    wire = decode_stream_entry(encode_stream_entry(message))
    events = b.receive(wire, 1.0)
    assert events[0] == NodeJoined("/", "a")
    event = events[1]
    assert isinstance(event, RemoteBroadcast)
    assert event.data == ["ev", 1, b"\x02"] and event.sender == "a" and event.request_id is None
    assert event.options.rooms == {"r"} and event.options.except_rooms == {"x", "sid1"} and event.options.volatile
    assert a.receive(message, 1.0) == []  # own messages are ignored


def test_fetch_sockets_bookkeeping_and_node_loss() -> None:
    a = ClusterCore("a", heartbeat_interval=1.0, heartbeat_timeout=3.0, request_timeout=5.0)
    a.add_namespace("/", 0.0)
    for uid in ("b", "c"):
        a.receive(ClusterMessage(MessageType.HEARTBEAT, uid, "/"), 0.0)
    assert a.nodes("/") == {"b", "c"}
    request_id, message = a.fetch_sockets("/", BroadcastOptions("/"), expected=2, now=0.5)
    assert message.type is MessageType.FETCH_SOCKETS and message.data is not None
    b = ClusterCore("b")
    b.add_namespace("/", 0.0)
    (joined, fetch) = b.receive(message, 0.5)
    assert isinstance(fetch, RemoteFetchSockets) and fetch.request_id == request_id
    answer = b.fetch_sockets_response("/", request_id, [{"id": "s1", "rooms": ["s1"], "data": {}, "handshake": {}}])
    assert a.receive(answer, 0.6) == []
    assert a.receive(answer, 0.6) == []  # a duplicate answer counts once
    # c goes silent: after the heartbeat timeout it is dropped and no longer waited for.
    a.receive(ClusterMessage(MessageType.HEARTBEAT, "b", "/"), 2.9)
    events, heartbeats = a.handle_timers(3.5)
    assert NodeLeft("/", "c", "heartbeat timeout") in events
    done = [e for e in events if isinstance(e, RequestDone)]
    assert done and done[0].responses == [{"id": "s1", "rooms": ["s1"], "data": {}, "handshake": {}}]
    assert not done[0].timed_out
    assert [h.type for h in heartbeats] == [MessageType.HEARTBEAT]
    assert a.nodes("/") == {"b"}


def test_request_timeout_reports_partial_answers() -> None:
    a = ClusterCore("a", request_timeout=2.0)
    a.add_namespace("/", 0.0)
    request_id, _ = a.server_side_emit_with_ack("/", ["hello", 1], expected=2, now=0.0)
    a.receive(a_response("b", request_id, 42), 0.5)
    assert a.next_deadline() == 2.0
    events, _ = a.handle_timers(2.0)
    (done,) = [e for e in events if isinstance(e, RequestDone)]
    assert done.timed_out and done.responses == [42] and done.missing == 1


def a_response(uid: str, request_id: str, value: Any) -> ClusterMessage:
    return ClusterMessage(MessageType.SERVER_SIDE_EMIT_RESPONSE, uid, "/", {"requestId": request_id, "packet": value})


def test_broadcast_with_ack_counts_clients_of_every_node() -> None:
    a = ClusterCore("a")
    a.add_namespace("/", 0.0)
    request_id, message = a.broadcast_with_ack("/", ["q"], BroadcastOptions("/"), expected=2, now=0.0, timeout=5.0)
    assert message.data is not None and message.data["opts"]["flags"] == {"timeout": 5000}
    assert a.check(request_id) is None
    b, c = ClusterCore("b"), ClusterCore("c")
    b.add_namespace("/", 0.0)
    received = b.receive(message, 0.1)[-1]
    assert isinstance(received, RemoteBroadcast) and received.request_id == request_id
    assert a.receive(b.broadcast_client_count("/", request_id, 2), 0.2) == [NodeJoined("/", "b")]
    a.receive(b.broadcast_ack("/", request_id, "x", sid="s1"), 0.3)
    assert a.receive(c.broadcast_client_count("/", request_id, 0), 0.3) == [NodeJoined("/", "c")]
    events = a.receive(b.broadcast_ack("/", request_id, "y"), 0.4)
    done = events[-1]
    assert isinstance(done, RequestDone) and not done.timed_out
    assert done.responses == [("s1", "x"), (None, "y")]


def test_server_side_emit_and_heartbeats() -> None:
    a, b = ClusterCore("a", heartbeat_interval=5, heartbeat_timeout=10), ClusterCore("b")
    hello = a.add_namespace("/", 0.0)
    b.add_namespace("/", 0.0)
    assert hello.type is MessageType.INITIAL_HEARTBEAT
    assert HeartbeatRequested("/", "a") in b.receive(hello, 0.0)
    assert a.next_deadline() == 5.0
    a.published("/", 3.0)
    assert a.next_deadline() == 8.0
    events = b.receive(a.server_side_emit("/", ["ping", 1]), 4.0)
    assert RemoteServerSideEmit("/", ["ping", 1], "a", None) in events
    assert b.receive(ClusterMessage(MessageType.ADAPTER_CLOSE, "a", "/"), 5.0) == [NodeLeft("/", "a", "adapter close")]
    assert b.nodes("/") == frozenset()
