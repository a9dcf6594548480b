"""The sans-I/O Socket.IO server core (PROTOCOL-NOTES "Connect, namespaces, auth",
"Events, acks, binary", "Disconnect", "Rooms, broadcast, volatile")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from volleyio.engineio.server import EngineIOServer, HttpRequest, HttpResponse, ReadBody, ServerConfig
from volleyio.socketio.adapter import BroadcastOptions, InMemoryAdapter
from volleyio.socketio.server import (
    DEFER,
    AckReceived,
    ConnectAttempt,
    ConnectRefused,
    ConnectRequested,
    EventReceived,
    NamespaceConfig,
    SocketConnected,
    SocketDisconnected,
    SocketIOConfig,
    SocketIOServer,
)

T0 = 50.0


class FakeTransport:
    """Records what the core sends; ``accept`` decides what volatile sends do."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str | bytes]] = {}
        self.closed: list[str] = []
        self.writable = True

    def send(self, sid: str, data: str | bytes, *, volatile: bool = False) -> bool:
        if volatile and not self.writable:
            return False
        self.sent.setdefault(sid, []).append(data)
        return True

    def close(self, sid: str, now: float) -> None:
        self.closed.append(sid)

    def take(self, sid: str) -> list[str | bytes]:
        return self.sent.pop(sid, [])


def make(**namespaces: NamespaceConfig) -> tuple[SocketIOServer, FakeTransport]:
    transport = FakeTransport()
    config = SocketIOConfig(namespaces={"/": NamespaceConfig(), **{f"/{k}": v for k, v in namespaces.items()}})
    return SocketIOServer(transport, config), transport


def connect(server: SocketIOServer, transport: FakeTransport, eio_sid: str = "E1", nsp: str = "/") -> str:
    if eio_sid not in server._connections:
        server.engineio_connected(eio_sid, T0)
    server.engineio_message(eio_sid, "0" if nsp == "/" else f"0{nsp},", T0)
    (reply,) = transport.take(eio_sid)
    assert isinstance(reply, str)
    prefix = "0" if nsp == "/" else f"0{nsp},"
    assert reply.startswith(prefix)
    payload = json.loads(reply[len(prefix):])
    assert list(payload) == ["sid"]
    sid: str = payload["sid"]
    return sid


# ------------------------------------------------------------------ connect


def test_connect_main_namespace_with_auth() -> None:
    server, transport = make()
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", '0{"token":"x"}', T0)
    (reply,) = transport.take("E1")
    assert isinstance(reply, str) and reply.startswith("0{")
    sid = json.loads(reply[1:])["sid"]
    assert sid != "E1"
    assert server.take_events() == [SocketConnected(sid, "/", "E1", {"token": "x"})]


def test_connect_without_auth_gives_empty_dict() -> None:
    server, transport = make()
    connect(server, transport)
    (event,) = server.take_events()
    assert isinstance(event, SocketConnected) and event.auth == {}


@pytest.mark.parametrize("wire", ["0/custom,", "0/custom"])
def test_connect_custom_namespace_with_and_without_comma(wire: str) -> None:
    server, transport = make(custom=NamespaceConfig())
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", wire, T0)
    (reply,) = transport.take("E1")
    assert isinstance(reply, str) and reply.startswith("0/custom,{")
    assert list(json.loads(reply[len("0/custom,"):])) == ["sid"]


def test_socket_ids_differ_per_namespace_and_from_eio_sid() -> None:
    server, transport = make(custom=NamespaceConfig())
    main = connect(server, transport)
    custom = connect(server, transport, nsp="/custom")
    assert len({main, custom, "E1"}) == 3


def test_unknown_namespace_invalid_namespace() -> None:
    server, transport = make()
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0/random,", T0)
    assert transport.take("E1") == ['4/random,{"message":"Invalid namespace"}']
    assert transport.closed == []
    assert server.take_events() == []


def test_auth_refusal_message_and_data() -> None:
    def refuse(attempt: ConnectAttempt) -> ConnectRefused | None:
        return None if attempt.auth.get("token") == "ok" else ConnectRefused("not authorized", {"code": 401})

    server, transport = make(admin=NamespaceConfig(authorize=refuse))
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", '0/admin,{"token":"bad"}', T0)
    assert transport.take("E1") == ['4/admin,{"message":"not authorized","data":{"code":401}}']
    server.engineio_message("E1", '0/admin,{"token":"ok"}', T0)
    (reply,) = transport.take("E1")
    assert isinstance(reply, str) and reply.startswith("0/admin,{")


def test_auth_refusal_without_data_has_only_message() -> None:
    server, transport = make()
    server.add_namespace("/x", NamespaceConfig(authorize=lambda a: ConnectRefused("nope")))
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0/x,", T0)
    assert transport.take("E1") == ['4/x,{"message":"nope"}']


def test_deferred_auth_accept() -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", '0/admin,{"t":1}', T0)
    assert transport.take("E1") == []
    (requested,) = server.take_events()
    assert requested == ConnectRequested("E1", "/admin", {"t": 1}, requested.sid)  # type: ignore[union-attr]
    sid = server.accept_connect("E1", "/admin")
    assert sid is not None and sid == requested.sid  # type: ignore[union-attr]
    assert transport.take("E1") == ['0/admin,{"sid":"' + sid + '"}']
    assert server.take_events() == [SocketConnected(sid, "/admin", "E1", {"t": 1})]
    assert server.accept_connect("E1", "/admin") is None  # already decided


def test_deferred_auth_refuse() -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0/admin,", T0)
    server.refuse_connect("E1", "/admin", ConnectRefused("later no", [1]))
    assert transport.take("E1") == ['4/admin,{"message":"later no","data":[1]}']
    server.refuse_connect("E1", "/admin", ConnectRefused("twice"))
    assert transport.take("E1") == []


@pytest.mark.parametrize("wire", ["0/admin,", '2/admin,["early"]'])
def test_packets_while_connect_pending_close_connection(wire: str) -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0/admin,", T0)
    server.engineio_message("E1", wire, T0)
    assert transport.closed == ["E1"]
    assert server.accept_connect("E1", "/admin") is None


def test_pending_connect_does_not_stop_connect_timeout() -> None:
    transport = FakeTransport()
    server = SocketIOServer(
        transport, SocketIOConfig(connect_timeout_ms=1000, namespaces={"/": NamespaceConfig(authorize=lambda a: DEFER)})
    )
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0", T0)
    server.handle_timers(T0 + 1)
    assert transport.closed == ["E1"]


@pytest.mark.parametrize("event", ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"])
def test_server_cannot_emit_reserved_events(event: str) -> None:
    server, transport = make()
    sid = connect(server, transport)
    with pytest.raises(ValueError):
        server.emit(sid, event)
    with pytest.raises(ValueError):
        server.broadcast("/", event)


def test_add_namespace_requires_slash() -> None:
    server, _ = make()
    with pytest.raises(ValueError):
        server.add_namespace("admin")


def test_duplicate_connect_closes_connection() -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.take_events()
    server.engineio_message("E1", "0", T0)
    assert transport.closed == ["E1"]
    assert server.take_events() == [SocketDisconnected(sid, "/", "invalid state")]


@pytest.mark.parametrize("wire", ['2["hello"]', "1", "3[]", '2/custom,["x"]', '4{"message":"x"}'])
def test_packet_for_unjoined_namespace_closes_connection(wire: str) -> None:
    server, transport = make(custom=NamespaceConfig())
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", wire, T0)
    assert transport.closed == ["E1"]


def test_client_connect_error_closes_even_when_joined() -> None:
    server, transport = make()
    connect(server, transport)
    server.engineio_message("E1", '4{"message":"x"}', T0)
    assert transport.closed == ["E1"]


@pytest.mark.parametrize("wire", ["abc", "2{}", '2abc["message"]', "2[NaN]", b"binary"])
def test_decode_errors_close_whole_connection(wire: str | bytes) -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.take_events()
    server.engineio_message("E1", wire, T0)
    assert transport.closed == ["E1"]
    assert server.take_events() == [SocketDisconnected(sid, "/", "parse error")]
    server.engineio_message("E1", '2["late"]', T0)  # ignored after close
    assert server.take_events() == []


def test_too_many_attachments_closes() -> None:
    server, transport = make()
    connect(server, transport)
    server.engineio_message("E1", '511-["e"]', T0)
    assert transport.closed == ["E1"]


# ------------------------------------------------------------------ connect timeout


def test_connect_timeout_closes_if_nothing_joined() -> None:
    transport = FakeTransport()
    server = SocketIOServer(transport, SocketIOConfig(connect_timeout_ms=1000))
    server.engineio_connected("E1", T0)
    assert server.next_deadline() == pytest.approx(T0 + 1)
    server.handle_timers(T0 + 0.999)
    assert transport.closed == []
    server.handle_timers(T0 + 1)
    assert transport.closed == ["E1"]
    assert server.next_deadline() is None


def test_connect_timeout_cleared_by_connect() -> None:
    transport = FakeTransport()
    server = SocketIOServer(transport, SocketIOConfig(connect_timeout_ms=1000))
    connect(server, transport)
    assert server.next_deadline() is None
    server.handle_timers(T0 + 5)
    assert transport.closed == []


def test_default_connect_timeout_45s() -> None:
    server, _ = make()
    server.engineio_connected("E1", T0)
    assert server.next_deadline() == pytest.approx(T0 + 45)


# ------------------------------------------------------------------ events and acks


def test_event_received_with_and_without_ack() -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.take_events()
    server.engineio_message("E1", '2["hello",1,{"a":2}]', T0)
    server.engineio_message("E1", '27["ask"]', T0)
    assert server.take_events() == [
        EventReceived(sid, "/", "hello", [1, {"a": 2}], None),
        EventReceived(sid, "/", "ask", [], 7),
    ]
    server.ack(sid, 7, "answer")
    server.ack(sid, 8)
    assert transport.take("E1") == ['37["answer"]', "38[]"]


def test_server_emit_and_ack_ids_count_from_zero() -> None:
    server, transport = make(custom=NamespaceConfig())
    sid = connect(server, transport, nsp="/custom")
    server.take_events()
    assert server.emit(sid, "a") is None
    assert server.emit(sid, "b", 1, with_ack=True) == 0
    assert server.emit(sid, "c", with_ack=True) == 1
    assert transport.take("E1") == ['2/custom,["a"]', '2/custom,0["b",1]', '2/custom,1["c"]']
    server.engineio_message("E1", '3/custom,1["r"]', T0)
    server.engineio_message("E1", '3/custom,1["again"]', T0)  # already answered: ignored
    server.engineio_message("E1", '3/custom,99["x"]', T0)  # unknown id: ignored
    assert server.take_events() == [AckReceived(sid, "/custom", 1, ["r"])]
    assert transport.closed == []


def test_binary_event_suite_example_round_trip() -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.take_events()
    server.engineio_message("E1", '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', T0)
    assert server.take_events() == []
    server.engineio_message("E1", b"\x01\x02", T0)
    server.engineio_message("E1", b"\x03", T0)
    (event,) = server.take_events()
    assert event == EventReceived(sid, "/", "message", [b"\x01\x02", b"\x03"], None)
    server.emit(sid, "message-back", *event.args)  # type: ignore[union-attr]
    assert transport.take("E1") == [
        '52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02",
        b"\x03",
    ]


def test_binary_ack_suite_example() -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.take_events()
    server.engineio_message(
        "E1", '52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', T0
    )
    server.engineio_message("E1", b"a", T0)
    server.engineio_message("E1", b"b", T0)
    (event,) = server.take_events()
    assert isinstance(event, EventReceived) and event.ack_id == 789
    server.ack(sid, 789, *event.args)
    assert transport.take("E1") == ['62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"a", b"b"]


def test_text_while_attachments_expected_closes() -> None:
    server, transport = make()
    connect(server, transport)
    server.engineio_message("E1", '51-["e",{"_placeholder":true,"num":0}]', T0)
    server.engineio_message("E1", '2["e"]', T0)
    assert transport.closed == ["E1"]


# ------------------------------------------------------------------ disconnect


def test_client_namespace_disconnect_keeps_connection() -> None:
    server, transport = make(custom=NamespaceConfig())
    main = connect(server, transport)
    custom = connect(server, transport, nsp="/custom")
    server.take_events()
    server.engineio_message("E1", "1/custom,", T0)
    assert server.take_events() == [SocketDisconnected(custom, "/custom", "client namespace disconnect")]
    assert transport.closed == []
    server.engineio_message("E1", '2["still"]', T0)
    assert server.take_events() == [EventReceived(main, "/", "still", [], None)]
    # the namespace can be joined again
    connect(server, transport, nsp="/custom")


def test_server_disconnect_sends_41() -> None:
    server, transport = make(custom=NamespaceConfig())
    custom = connect(server, transport, nsp="/custom")
    server.take_events()
    server.disconnect(custom)
    assert transport.take("E1") == ["1/custom,"]
    assert server.take_events() == [SocketDisconnected(custom, "/custom", "server namespace disconnect")]
    assert server.rooms(custom) == frozenset()
    server.engineio_message("E1", '2/custom,["x"]', T0)  # no longer joined
    assert transport.closed == ["E1"]


def test_engineio_disconnect_drops_all_sockets_with_reason() -> None:
    server, transport = make(custom=NamespaceConfig())
    main = connect(server, transport)
    custom = connect(server, transport, nsp="/custom")
    server.take_events()
    server.engineio_disconnected("E1", "ping timeout")
    assert sorted(server.take_events(), key=lambda e: e.namespace) == [  # type: ignore[union-attr]
        SocketDisconnected(main, "/", "ping timeout"),
        SocketDisconnected(custom, "/custom", "ping timeout"),
    ]
    assert server.adapter.sockets("/") == frozenset()


# ------------------------------------------------------------------ rooms and broadcast


def test_socket_joins_room_named_after_its_id_and_leaves_on_disconnect() -> None:
    server, transport = make()
    sid = connect(server, transport)
    server.join(sid, "lobby")
    assert server.rooms(sid) == {sid, "lobby"}
    assert server.adapter.members("/", "lobby") == {sid}
    server.leave(sid, "lobby")
    assert server.rooms(sid) == {sid}
    server.join(sid, "lobby")
    server.engineio_disconnected("E1", "transport close")
    assert server.adapter.members("/", "lobby") == frozenset()
    assert server.adapter.members("/", sid) == frozenset()


def test_broadcast_encodes_once_and_shares_objects() -> None:
    server, transport = make()
    sids = [connect(server, transport, eio_sid=f"E{i}") for i in range(5)]
    for sid in sids[:3]:
        server.join(sid, "room")
    count = server.broadcast("/", "news", {"x": 1}, b"\x00", rooms=["room"], except_sids=[sids[0]])
    assert count == 2
    received = [transport.take(f"E{i}") for i in range(5)]
    assert received[0] == [] and received[3] == [] and received[4] == []
    assert received[1] == ['51-["news",{"x":1},{"_placeholder":true,"num":0}]', b"\x00"]
    assert received[1][0] is received[2][0] and received[1][1] is received[2][1]


def test_broadcast_to_whole_namespace_and_except_rooms() -> None:
    server, transport = make()
    sids = [connect(server, transport, eio_sid=f"E{i}") for i in range(3)]
    server.join(sids[2], "muted")
    assert server.broadcast("/", "all", except_rooms=["muted"]) == 2
    assert [transport.take(f"E{i}") for i in range(3)] == [['2["all"]'], ['2["all"]'], []]


def test_broadcast_only_reaches_its_namespace() -> None:
    server, transport = make(custom=NamespaceConfig())
    connect(server, transport, eio_sid="E1")
    connect(server, transport, eio_sid="E2", nsp="/custom")
    assert server.broadcast("/custom", "x") == 1
    assert transport.take("E1") == [] and transport.take("E2") == ['2/custom,["x"]']


def test_volatile_drop_never_splits_a_binary_packet() -> None:
    server, transport = make()
    sid = connect(server, transport)
    transport.writable = False
    server.emit(sid, "v", b"1", volatile=True)
    assert transport.take("E1") == []
    transport.writable = True
    server.emit(sid, "v", b"1", volatile=True)
    assert transport.take("E1") == ['51-["v",{"_placeholder":true,"num":0}]', b"1"]


def test_in_memory_adapter_targets() -> None:
    adapter = InMemoryAdapter()
    for sid, rooms in {"a": ["r1"], "b": ["r1", "r2"], "c": ["r2"], "d": []}.items():
        adapter.join("/", sid, sid)
        for room in rooms:
            adapter.join("/", sid, room)
    assert adapter.targets(BroadcastOptions("/")) == {"a", "b", "c", "d"}
    assert adapter.targets(BroadcastOptions("/", rooms=frozenset({"r1", "r2"}))) == {"a", "b", "c"}
    assert adapter.targets(BroadcastOptions("/", except_rooms=frozenset({"r2"}))) == {"a", "d"}
    assert adapter.targets(BroadcastOptions("/", except_sids=frozenset({"a"}))) == {"b", "c", "d"}
    adapter.leave_all("/", "b")
    assert adapter.members("/", "r1") == {"a"}
    assert adapter.sockets("/") == {"a", "c", "d"}


# ------------------------------------------------------------------ end to end over Engine.IO polling


def _poll(eio_server: EngineIOServer, sid: str) -> bytes:
    response = eio_server.handle_request(HttpRequest("GET", "/socket.io/", {"EIO": "4", "transport": "polling", "sid": sid}), T0)
    assert isinstance(response, HttpResponse)
    return response.body


def _post(eio_server: EngineIOServer, sid: str, body: bytes) -> None:
    outcome = eio_server.handle_request(HttpRequest("POST", "/socket.io/", {"EIO": "4", "transport": "polling", "sid": sid}), T0)
    assert isinstance(outcome, ReadBody)
    eio_server.post_body(sid, body, T0)


def _pump(eio_server: EngineIOServer, sio_server: SocketIOServer) -> None:
    for event in eio_server.take_events():
        sio_server.handle_engineio_event(event, T0)


def _open(eio_server: EngineIOServer, sio_server: SocketIOServer) -> str:
    response = eio_server.handle_request(HttpRequest("GET", "/socket.io/", {"EIO": "4", "transport": "polling"}), T0)
    assert isinstance(response, HttpResponse)
    sid: str = json.loads(response.body[1:])["sid"]
    _pump(eio_server, sio_server)
    return sid


def test_over_engineio_invalid_namespace_on_the_wire() -> None:
    eio_server = EngineIOServer(ServerConfig())
    sio_server = SocketIOServer(eio_server)
    sid = _open(eio_server, sio_server)
    _post(eio_server, sid, b"40/random,")
    _pump(eio_server, sio_server)
    assert _poll(eio_server, sid) == b'44/random,{"message":"Invalid namespace"}'


@pytest.mark.parametrize("body", [b"4abc", b"42{}", b'42abc["message"]'])
def test_over_engineio_bad_packets_close_connection(body: bytes) -> None:
    eio_server = EngineIOServer(ServerConfig())
    sio_server = SocketIOServer(eio_server)
    sid = _open(eio_server, sio_server)
    _post(eio_server, sid, b"40")
    _pump(eio_server, sio_server)
    assert _poll(eio_server, sid).startswith(b'40{"sid":')
    _post(eio_server, sid, body)
    _pump(eio_server, sio_server)
    assert _poll(eio_server, sid) == b"1"  # forced close: the next GET gets the close packet
    response = eio_server.handle_request(HttpRequest("GET", "/socket.io/", {"EIO": "4", "transport": "polling", "sid": sid}), T0)
    assert isinstance(response, HttpResponse) and response.status == 400


def test_over_engineio_binary_event_in_polling_payload() -> None:
    eio_server = EngineIOServer(ServerConfig())
    sio_server = SocketIOServer(eio_server)
    sid = _open(eio_server, sio_server)
    _post(eio_server, sid, b"40")
    _pump(eio_server, sio_server)
    _poll(eio_server, sid)
    (connected,) = [e for e in sio_server.take_events() if isinstance(e, SocketConnected)]
    _post(eio_server, sid, b'451-["up",{"_placeholder":true,"num":0}]\x1ebAQID')
    _pump(eio_server, sio_server)
    (event,) = sio_server.take_events()
    assert event == EventReceived(connected.sid, "/", "up", [b"\x01\x02\x03"], None)
    args: list[Any] = event.args  # type: ignore[union-attr]
    sio_server.emit(connected.sid, "down", *args)
    assert _poll(eio_server, sid) == b'451-["down",{"_placeholder":true,"num":0}]\x1ebAQID'


# ------------------------------------------------------------------ deferred connects, broadcast acks, resolver


def _deferred(server: SocketIOServer, transport: FakeTransport, nsp: str = "/admin") -> ConnectRequested:
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", f"0{nsp},", T0)
    assert transport.take("E1") == []
    (requested,) = server.take_events()
    assert isinstance(requested, ConnectRequested) and requested.sid
    return requested


def test_messages_to_a_pending_socket_are_held_until_accepted() -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    requested = _deferred(server, transport)
    sid = requested.sid
    server.join(sid, "team")
    server.emit(sid, "welcome", 1)
    server.emit(sid, "flash", volatile=True)  # cannot be delivered now: dropped
    server.broadcast("/admin", "news", rooms=["team"])
    server.disconnect(sid)  # not connected yet: refuse_connect is the way to say no
    assert transport.take("E1") == []
    assert server.accept_connect("E1", "/admin") == sid
    assert transport.take("E1") == ['0/admin,{"sid":"' + sid + '"}', '2/admin,["welcome",1]', '2/admin,["news"]']
    server.emit(sid, "after")
    assert transport.take("E1") == ['2/admin,["after"]']
    assert server.rooms(sid) == {sid, "team"}


def test_refused_pending_socket_leaves_no_trace() -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    requested = _deferred(server, transport)
    server.join(requested.sid, "team")
    server.emit(requested.sid, "never")
    server.refuse_connect("E1", "/admin", ConnectRefused("no"))
    assert transport.take("E1") == ['4/admin,{"message":"no"}']
    assert server.adapter.members("/admin", "team") == frozenset()
    assert server.socket_info(requested.sid) is None
    assert server.take_events() == []


def test_pending_socket_dropped_with_its_connection() -> None:
    server, transport = make(admin=NamespaceConfig(authorize=lambda a: DEFER))
    requested = _deferred(server, transport)
    server.join(requested.sid, "team")
    server.engineio_disconnected("E1", "transport close")
    assert server.adapter.members("/admin", "team") == frozenset()
    assert server.accept_connect("E1", "/admin") is None
    assert server.take_events() == []  # it never connected: no SocketDisconnected


def test_ack_ids_are_counted_per_namespace() -> None:
    server, transport = make(custom=NamespaceConfig())
    a = connect(server, transport, "E1")
    b = connect(server, transport, "E2")
    c = connect(server, transport, "E3", nsp="/custom")
    assert [server.emit(a, "x", with_ack=True), server.emit(b, "x", with_ack=True)] == [0, 1]
    assert server.emit(c, "x", with_ack=True) == 0


def test_broadcast_with_ack_one_id_one_encoding() -> None:
    transport = FakeTransport()

    class Prepared:
        def __init__(self, data: str | bytes) -> None:
            self.data = data

    server = SocketIOServer(transport, prepare=Prepared)
    sids = [connect(server, transport, f"E{i}") for i in range(3)]
    transport.sent.clear()
    server.take_events()
    ack_id, targets = server.broadcast_with_ack("/", "poll", b"\x01", except_sids=[sids[2]])
    assert sorted(targets) == sorted(sids[:2])
    first, second = (transport.take(f"E{i}") for i in range(2))
    assert transport.take("E2") == []
    assert all(x is y for x, y in zip(first, second))  # the same prepared objects for both
    assert [m.data for m in first] == [f'51-{ack_id}["poll",{{"_placeholder":true,"num":0}}]', b"\x01"]  # type: ignore[attr-defined]
    server.engineio_message("E0", f'3{ack_id}["yes"]', T0)
    server.cancel_ack(sids[1], ack_id)
    server.engineio_message("E1", f'3{ack_id}["late"]', T0)
    assert server.take_events() == [AckReceived(sids[0], "/", ack_id, ["yes"])]


def test_namespace_resolver_for_dynamic_namespaces() -> None:
    transport = FakeTransport()
    server = SocketIOServer(
        transport,
        SocketIOConfig(namespaces={}),
        namespace_resolver=lambda name: NamespaceConfig() if name.startswith("/dyn-") else None,
    )
    server.engineio_connected("E1", T0)
    server.engineio_message("E1", "0/dyn-7,", T0)
    (reply,) = transport.take("E1")
    assert isinstance(reply, str) and reply.startswith('0/dyn-7,{"sid":')
    server.engineio_message("E1", "0/other,", T0)
    assert transport.take("E1") == ['4/other,{"message":"Invalid namespace"}']
    server.engineio_message("E1", "0", T0)  # "/" is not special: it was not declared
    assert transport.take("E1") == ['4{"message":"Invalid namespace"}']


def test_deliver_broadcast_from_another_node_reaches_local_targets_only() -> None:
    published: list[tuple[Any, BroadcastOptions]] = []

    class Recording(InMemoryAdapter):
        def broadcast(self, messages: Any, options: BroadcastOptions, deliver: Any) -> int:
            published.append((messages, options))
            return super().broadcast(messages, options, deliver)

    transport = FakeTransport()
    server = SocketIOServer(transport, adapter=Recording())
    a = connect(server, transport, "E1")
    connect(server, transport, "E2")
    server.join(a, "red")
    server.broadcast("/", "hi", rooms=["red"])
    assert transport.take("E1") == ['2["hi"]'] and transport.take("E2") == []
    (messages, options), = published
    # The same encoded messages arriving from the broker: delivered, not published again.
    assert server.deliver_broadcast(messages, options) == 1
    assert transport.take("E1") == ['2["hi"]'] and transport.take("E2") == []
    assert len(published) == 1
