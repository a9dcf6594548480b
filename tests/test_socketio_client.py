"""The sans-I/O Socket.IO client core (volleyio.socketio.client)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volleyio.socketio import SocketIOEncodeError
from volleyio.socketio.client import (
    V2_SERVER_MESSAGE,
    ClientAckReceived,
    ClientAcksFailed,
    ClientConnected,
    ClientConnectRefused,
    ClientDisconnected,
    ClientEventReceived,
    NamespaceState,
    SendBufferFullError,
    SocketIOClient,
    SocketIODisconnectedError,
)


def opened(*namespaces: str, **options: Any) -> SocketIOClient:
    core = SocketIOClient(**options)
    for namespace in namespaces or ("/",):
        core.add_namespace(namespace)
    core.engineio_opened()
    return core


def joined(*namespaces: str, **options: Any) -> SocketIOClient:
    core = opened(*namespaces, **options)
    for namespace in core.namespaces_to_join():
        core.connect(namespace)
        prefix = "" if namespace == "/" else namespace + ","
        events = core.receive("0" + prefix + json.dumps({"sid": "S" + namespace}))
        assert events == [ClientConnected(namespace, "S" + namespace)]
    core.data_to_send()
    return core


# ----------------------------------------------------------------------------- connect


def test_connect_sends_auth_per_namespace() -> None:
    core = opened("/", "/admin")
    assert core.namespaces_to_join() == ["/", "/admin"]
    core.connect("/")
    core.connect("/admin", {"token": "x"})
    assert core.data_to_send() == ["0", '0/admin,{"token":"x"}']
    assert core.state("/") is NamespaceState.CONNECTING
    assert core.namespaces_to_join() == []


def test_connect_answer_sets_socket_id() -> None:
    core = opened("/", "/admin")
    core.connect("/")
    core.connect("/admin")
    assert core.receive('0/admin,{"sid":"a1"}') == [ClientConnected("/admin", "a1")]
    assert core.receive('0{"sid":"m1"}') == [ClientConnected("/", "m1")]
    assert core.sid("/") == "m1" and core.sid("/admin") == "a1"
    assert core.state("/") is NamespaceState.CONNECTED


def test_connect_answer_without_sid_is_a_connect_error() -> None:
    core = opened()
    core.connect("/")
    assert core.receive("0") == [ClientConnectRefused("/", V2_SERVER_MESSAGE, None)]
    assert core.state("/") is NamespaceState.ENDED
    assert core.active_namespaces() == []
    with pytest.raises(SocketIODisconnectedError) as info:
        core.emit("/", "x")
    assert info.value.reason == "connect error"


def test_connect_answer_with_non_string_sid_is_a_connect_error() -> None:
    core = opened()
    core.connect("/")
    assert core.receive('0{"sid":12}') == [ClientConnectRefused("/", V2_SERVER_MESSAGE, None)]


def test_connect_error_with_message_and_data() -> None:
    core = opened("/admin")
    core.connect("/admin", {"token": "bad"})
    events = core.receive('4/admin,{"message":"not authorized","data":{"code":4001}}')
    assert events == [ClientConnectRefused("/admin", "not authorized", {"code": 4001})]
    assert core.namespaces_to_join() == []
    core.engineio_closed("transport close")
    core.engineio_opened()
    assert core.namespaces_to_join() == []  # a refused namespace is not retried


def test_connect_error_as_v4_string() -> None:
    core = opened()
    core.connect("/")
    assert core.receive('4"Invalid namespace"') == [ClientConnectRefused("/", "Invalid namespace", None)]


def test_connect_refused_fails_buffered_acks() -> None:
    core = opened()
    first = core.emit("/", "a", ack=True)
    core.emit("/", "b")
    core.connect("/")
    events = core.receive('4{"message":"no"}')
    assert events == [ClientConnectRefused("/", "no", None), ClientAcksFailed("/", (first,), "connect error")]  # type: ignore[arg-type]
    assert core.buffered("/") == 0


def test_re_adding_an_ended_namespace_wants_it_again() -> None:
    core = opened()
    core.connect("/")
    core.receive('4{"message":"no"}')
    core.add_namespace("/")
    assert core.namespaces_to_join() == ["/"]
    core.connect("/", {"token": "good"})
    assert core.data_to_send()[-1] == '0{"token":"good"}'


def test_connect_validates_arguments() -> None:
    core = SocketIOClient()
    with pytest.raises(ValueError):
        core.add_namespace("admin")
    with pytest.raises(RuntimeError):
        core.connect("/")  # no Engine.IO connection
    core.engineio_opened()
    with pytest.raises(TypeError):
        core.connect("/", ["not", "an", "object"])  # type: ignore[arg-type]
    core.connect("/")
    with pytest.raises(RuntimeError):
        core.connect("/")  # already connecting


# ----------------------------------------------------------------------------- events and acks


def test_emit_and_acks_count_from_zero_per_namespace() -> None:
    core = joined("/", "/admin")
    assert core.emit("/", "hello", 1, "two") is None
    assert core.emit("/", "q", ack=True) == 0
    assert core.emit("/", "q", ack=True) == 1
    assert core.emit("/admin", "q", {"a": None}, ack=True) == 0
    assert core.data_to_send() == ['2["hello",1,"two"]', '20["q"]', '21["q"]', '2/admin,0["q",{"a":null}]']
    assert core.receive('31["one"]') == [ClientAckReceived("/", 1, ["one"])]
    assert core.receive("30[]") == [ClientAckReceived("/", 0, [])]
    assert core.receive('3/admin,0[1,2]') == [ClientAckReceived("/admin", 0, [1, 2])]


def test_unknown_and_repeated_ack_ids_are_ignored() -> None:
    core = joined()
    core.emit("/", "q", ack=True)
    assert core.receive("37[]") == []
    assert core.receive("30[]") == [ClientAckReceived("/", 0, [])]
    assert core.receive("30[]") == []


def test_binary_emit_uses_attachments() -> None:
    core = joined("/admin")
    core.emit("/admin", "bin", b"\x00\x01", {"x": [bytearray(b"z")]}, ack=True)
    assert core.data_to_send() == [
        '52-/admin,0["bin",{"_placeholder":true,"num":0},{"x":[{"_placeholder":true,"num":1}]}]',
        b"\x00\x01",
        b"z",
    ]
    assert core.receive('61-/admin,0[{"_placeholder":true,"num":0}]') == []
    assert core.receive(b"ok") == [ClientAckReceived("/admin", 0, [b"ok"])]


def test_server_event_with_ack_is_answered() -> None:
    core = joined()
    events = core.receive('212["question",3]')
    assert events == [ClientEventReceived("/", "S/", "question", [3], 12)]
    assert core.ack("/", "S/", 12, "answer", b"\x09")
    assert core.data_to_send() == ['61-12["answer",{"_placeholder":true,"num":0}]', b"\x09"]


def test_binary_event_from_server_is_reassembled() -> None:
    core = joined("/admin")
    header = '52-/admin,5["file",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]'
    assert core.receive(header) == []
    assert core.receive(b"first") == []
    events = core.receive(b"second")
    assert events == [ClientEventReceived("/admin", "S/admin", "file", [b"second", b"first"], 5)]


def test_numeric_event_name_is_passed_through() -> None:
    core = joined()
    assert core.receive("2[42,1]") == [ClientEventReceived("/", "S/", 42, [1], None)]


def test_ack_for_an_older_connection_is_dropped() -> None:
    core = joined()
    core.receive('20["q"]')
    core.engineio_closed("transport close")
    core.engineio_opened()
    core.connect("/")
    core.receive('0{"sid":"new"}')
    core.data_to_send()
    assert not core.ack("/", "S/", 0, "late")
    assert core.data_to_send() == []


def test_packets_for_namespaces_not_connected_are_ignored() -> None:
    core = opened("/", "/admin")
    core.connect("/")
    assert core.receive('2["early"]') == []  # CONNECT not answered yet
    core.receive('0{"sid":"m"}')
    assert core.receive('2/other,["x"]') == []
    assert core.receive('2/admin,["x"]') == []
    assert core.receive('0/admin,{"sid":"unsolicited"}') == []
    assert core.state("/admin") is NamespaceState.DISCONNECTED


def test_emit_validates_arguments() -> None:
    core = joined()
    with pytest.raises(ValueError):
        core.emit("/", "connect")
    with pytest.raises(ValueError):
        core.emit("/", "x", ack=True, volatile=True)
    with pytest.raises(SocketIOEncodeError):
        core.emit("/", "x", math.nan, ack=True)
    with pytest.raises(SocketIODisconnectedError):
        core.emit("/nowhere", "x")
    assert core.data_to_send() == []
    assert core.emit("/", "x", ack=True) == 0  # the failed emit did not use up an id


# ----------------------------------------------------------------------------- buffering


def test_emits_before_connect_are_buffered_and_flushed_in_order() -> None:
    core = opened()
    assert core.emit("/", "a", 1) is None
    assert core.emit("/", "b", ack=True) == 0
    assert core.emit("/", "c", b"\x01") is None
    assert core.emit("/", "v", volatile=True) is None  # dropped, not buffered
    assert core.buffered("/") == 3
    assert core.data_to_send() == []
    core.connect("/")
    assert core.data_to_send() == ["0"]
    core.receive('0{"sid":"m"}')
    assert core.data_to_send() == [
        '2["a",1]', '20["b"]', '51-["c",{"_placeholder":true,"num":0}]', b"\x01",
    ]
    assert core.receive('30["ok"]') == [ClientAckReceived("/", 0, ["ok"])]


def test_volatile_is_sent_when_connected() -> None:
    core = joined()
    core.emit("/", "v", 1, volatile=True)
    assert core.data_to_send() == ['2["v",1]']


def test_buffer_limit_raises_and_keeps_what_was_buffered() -> None:
    core = opened(buffer_limit=2)
    core.emit("/", "a")
    core.emit("/", "b", ack=True)
    with pytest.raises(SendBufferFullError) as info:
        core.emit("/", "c", ack=True)
    assert info.value.limit == 2 and info.value.namespace == "/"
    assert core.buffered("/") == 2
    with pytest.raises(SendBufferFullError):
        core.emit("/", "d")
    core.connect("/")
    core.receive('0{"sid":"m"}')
    assert core.data_to_send() == ["0", '2["a"]', '20["b"]']
    assert core.emit("/", "e", ack=True) == 1  # the refused emit did not use up an id


def test_buffer_survives_a_reconnect_and_sent_acks_fail() -> None:
    core = joined()
    sent = core.emit("/", "sent", ack=True)
    core.data_to_send()
    events = core.engineio_closed("ping timeout")
    assert events == [
        ClientDisconnected("/", "ping timeout", False),
        ClientAcksFailed("/", (sent,), "ping timeout"),  # type: ignore[arg-type]
    ]
    buffered = core.emit("/", "later", ack=True)
    core.emit("/", "later2", [1, 2])
    assert buffered == 1  # ids keep counting across connections
    core.engineio_opened()
    assert core.namespaces_to_join() == ["/"]
    core.connect("/")
    core.receive('0{"sid":"again"}')
    assert core.data_to_send() == ["0", '21["later"]', '2["later2",[1,2]]']
    assert core.receive("31[]") == [ClientAckReceived("/", 1, [])]


def test_cancel_ack_removes_a_buffered_packet() -> None:
    core = opened()
    core.emit("/", "a")
    dropped = core.emit("/", "b", ack=True)
    core.emit("/", "c")
    assert dropped is not None
    core.cancel_ack("/", dropped)
    core.connect("/")
    core.receive('0{"sid":"m"}')
    assert core.data_to_send() == ["0", '2["a"]', '2["c"]']


def test_cancel_ack_forgets_a_sent_ack() -> None:
    core = joined()
    ack_id = core.emit("/", "q", ack=True)
    assert ack_id is not None
    core.cancel_ack("/", ack_id)
    assert core.receive("30[]") == []
    assert core.engineio_closed("transport close") == [ClientDisconnected("/", "transport close", False)]


# ----------------------------------------------------------------------------- disconnect


def test_server_disconnect_is_final() -> None:
    core = joined("/", "/admin")
    pending = core.emit("/admin", "q", ack=True)
    events = core.receive("1/admin,")
    assert events == [
        ClientDisconnected("/admin", "io server disconnect", True),
        ClientAcksFailed("/admin", (pending,), "io server disconnect"),  # type: ignore[arg-type]
    ]
    assert core.active_namespaces() == ["/"]
    with pytest.raises(SocketIODisconnectedError) as info:
        core.emit("/admin", "x")
    assert info.value.reason == "io server disconnect"
    core.engineio_closed("transport close")
    core.engineio_opened()
    assert core.namespaces_to_join() == ["/"]


def test_client_disconnect_sends_41() -> None:
    core = joined("/", "/admin")
    assert core.disconnect("/admin") == [ClientDisconnected("/admin", "io client disconnect", True)]
    assert core.data_to_send() == ["1/admin,"]
    assert core.disconnect("/admin") == []
    assert core.active_namespaces() == ["/"]
    assert core.disconnect("/") == [ClientDisconnected("/", "io client disconnect", True)]
    assert core.data_to_send() == ["1"]
    assert core.active_namespaces() == []


def test_client_disconnect_while_connecting_waits_for_the_answer() -> None:
    core = opened()
    core.connect("/")
    core.data_to_send()
    assert core.disconnect("/") == []
    assert core.data_to_send() == []  # 41 before acceptance would be "invalid state" for Node
    assert core.active_namespaces() == []
    assert core.receive('0{"sid":"late"}') == []
    assert core.data_to_send() == ["1"]
    assert core.state("/") is NamespaceState.ENDED


def test_client_disconnect_while_connecting_then_refused() -> None:
    core = opened()
    core.connect("/")
    core.disconnect("/")
    assert core.receive('4{"message":"no"}') == []
    assert core.data_to_send() == ["0"]
    assert core.state("/") is NamespaceState.ENDED


def test_server_disconnect_while_connecting_is_a_refusal() -> None:
    core = opened()
    core.connect("/")
    events = core.receive("1")
    assert events == [ClientConnectRefused("/", "io server disconnect", None)]
    assert core.end_reason("/") == "io server disconnect"


def test_engineio_close_reports_every_connected_namespace() -> None:
    core = joined("/", "/admin")
    events = core.engineio_closed("transport close")
    assert events == [
        ClientDisconnected("/", "transport close", False),
        ClientDisconnected("/admin", "transport close", False),
    ]
    assert core.sid("/") is None
    assert core.engineio_closed("transport close") == []


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "messages",
    [
        ["2abc"],
        ["4abc"],
        ["2{}"],
        ['2["connect"]'],
        ["9"],
        [b"stray binary"],
        ['51-["x",{"_placeholder":true,"num":0}]', "text while reconstructing"],
        ['511-["x"]'],  # more attachments than the limit
        ["2" + "[" * 2000 + "]" * 2000],
    ],
)
def test_malformed_input_closes_the_connection(messages: list[str | bytes]) -> None:
    core = joined()
    pending = core.emit("/", "q", ack=True)
    core.data_to_send()
    events: list[Any] = []
    for message in messages:
        events += core.receive(message)
    assert core.close_reason == "parse error"
    assert events == [
        ClientDisconnected("/", "parse error", False),
        ClientAcksFailed("/", (pending,), "parse error"),  # type: ignore[arg-type]
    ]
    assert core.receive('2["after"]') == []
    assert core.data_to_send() == []
    assert core.engineio_closed("forced close") == []
    # the namespace is rejoined on the next connection, with a fresh decoder
    core.engineio_opened()
    assert core.close_reason is None
    assert core.namespaces_to_join() == ["/"]
    core.connect("/")
    assert core.receive('0{"sid":"x"}') == [ClientConnected("/", "x")]


def test_max_attachments_is_configurable() -> None:
    core = joined(max_attachments=2)
    core.receive('53-["x",{"_placeholder":true,"num":0}]')
    assert core.close_reason == "parse error"


# ----------------------------------------------------------------------------- ack bookkeeping

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.booleans()),  # with or without an ack
        st.tuples(st.just("answer"), st.integers(0, 40)),  # the server acks some id
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("drop"), st.just(0)),  # the Engine.IO connection ends
        st.tuples(st.just("reopen"), st.just(0)),  # a new one opens and the CONNECT is answered
        st.tuples(st.just("kick"), st.just(0)),  # server-side 41
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_every_ack_is_settled_exactly_once(operations: list[tuple[str, Any]]) -> None:
    """Each ack id ends as received, failed or cancelled, once; ids the server may still
    answer are exactly the sent, unsettled ones."""
    core = SocketIOClient(buffer_limit=8)
    core.add_namespace("/")
    settled: dict[int, str] = {}
    issued: list[int] = []
    on_wire: set[int] = set()  # sent over the current connection, not yet settled

    def absorb(events: list[Any]) -> None:
        for event in events:
            if isinstance(event, ClientAckReceived):
                assert event.ack_id not in settled
                settled[event.ack_id] = "received"
                on_wire.discard(event.ack_id)
            elif isinstance(event, ClientAcksFailed):
                for ack_id in event.ack_ids:
                    assert ack_id not in settled
                    settled[ack_id] = "failed"
                    on_wire.discard(ack_id)

    def sent() -> None:
        for message in core.data_to_send():
            if isinstance(message, str) and message.startswith("2") and message[1].isdigit():
                on_wire.add(int(message[1:message.index("[")]))

    for op, arg in operations:
        state = core.state("/")
        if op == "emit":
            try:
                ack_id = core.emit("/", "e", ack=arg)
            except (SendBufferFullError, SocketIODisconnectedError):
                continue
            if ack_id is not None:
                assert ack_id == len(issued)  # counts from 0, never reused
                issued.append(ack_id)
            sent()
        elif op == "answer":
            events = core.receive(f"3{arg}[]")
            assert events == ([ClientAckReceived("/", arg, [])] if arg in on_wire else [])
            absorb(events)
        elif op == "cancel":
            if arg in issued and arg not in settled:
                core.cancel_ack("/", arg)
                settled[arg] = "cancelled"
                on_wire.discard(arg)
        elif op == "drop":
            absorb(core.engineio_closed("transport close"))
            on_wire.clear()
        elif op == "reopen" and state is not NamespaceState.ENDED:
            absorb(core.engineio_closed("transport close"))
            on_wire.clear()
            core.engineio_opened()
            for namespace in core.namespaces_to_join():
                core.connect(namespace)
            absorb(core.receive('0{"sid":"x"}'))
            sent()
        elif op == "kick" and state is NamespaceState.CONNECTED:
            absorb(core.receive("1"))
            on_wire.clear()
    # close everything: whatever is still open must be settled now
    absorb(core.disconnect("/"))
    absorb(core.engineio_closed("transport close"))
    assert sorted(settled) == issued
