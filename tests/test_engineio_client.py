"""The sans-I/O Engine.IO client, alone and driven against the sans-I/O server."""

from __future__ import annotations

import json

import pytest

from volleyio.engineio.client import (
    ClientClosed,
    ClientConfig,
    ClientMessage,
    ClientOpened,
    ClientUpgraded,
    EngineIOClient,
)
from volleyio.engineio.server import (
    AcceptWebSocket,
    EngineIOServer,
    HttpRequest,
    HttpResponse,
    MessageReceived,
    PollParked,
    ReadBody,
    ServerConfig,
    Upgraded,
)

T0 = 10.0
OPEN = b'0{"sid":"abc","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000}'


def opened_client() -> EngineIOClient:
    client = EngineIOClient()
    request = client.handshake_request()
    assert request.method == "GET" and dict(request.query) == {"EIO": "4", "transport": "polling"}
    client.poll_response(200, OPEN, T0)
    return client


def test_handshake_parses_open_packet() -> None:
    client = opened_client()
    assert client.take_events() == [ClientOpened("abc", ("websocket",), 300, 200, 1000)]
    assert client.is_open and client.sid == "abc"
    assert client.should_upgrade


@pytest.mark.parametrize(
    "body",
    [b"4hello", b"0{}", b'0{"sid":"a","upgrades":[],"pingInterval":"x","pingTimeout":1}', b"0[", b"zz"],
)
def test_bad_handshake_closes(body: bytes) -> None:
    client = EngineIOClient()
    client.handshake_request()
    client.poll_response(200, body, T0)
    assert client.closed
    (event,) = client.take_events()
    assert isinstance(event, ClientClosed) and event.reason == "parse error"


def test_poll_request_one_at_a_time_with_sid() -> None:
    client = opened_client()
    request = client.poll_request()
    assert request is not None and request.query["sid"] == "abc"
    assert client.poll_request() is None
    client.poll_response(200, b"4hi\x1ebAQ==", T0)
    assert client.take_events()[-2:] == [ClientMessage("hi"), ClientMessage(b"\x01")]
    assert client.poll_request() is not None


def test_post_batches_buffer_one_at_a_time() -> None:
    client = opened_client()
    assert client.post_request() is None
    client.send("a")
    client.send(b"\x01\x02")
    request = client.post_request()
    assert request is not None and request.method == "POST" and request.body == b"4a\x1ebAQI="
    client.send("b")
    assert client.post_request() is None  # one POST in flight
    client.post_response(200, T0)
    later = client.post_request()
    assert later is not None and later.body == b"4b"


def test_post_batches_up_to_max_payload() -> None:
    client = opened_client()  # maxPayload 1000
    for _ in range(3):
        client.send("x" * 400)
    first = client.post_request()
    assert first is not None and first.body.count(b"\x1e") == 1
    client.post_response(200, T0)
    second = client.post_request()
    assert second is not None and second.body == b"4" + b"x" * 400


def test_post_batches_at_most_16_packets() -> None:
    """python-engineio refuses payloads of more than 16 packets."""
    client = opened_client()
    for i in range(40):
        client.send(f"m{i}")
    sizes = []
    while (request := client.post_request()) is not None:
        sizes.append(request.body.count(b"\x1e") + 1)
        client.post_response(200, T0)
    assert sizes == [16, 16, 8]
    assert client.buffered_amount == 0


def test_post_batch_size_counts_base64() -> None:
    client = opened_client()  # maxPayload 1000: 600 bytes is 801 characters of base64
    client.send(b"\x00" * 600)
    client.send("y" * 300)
    assert client.buffered_amount == 900
    first = client.post_request()
    assert first is not None and len(first.body) == 801 and client.buffered_amount == 300
    client.post_response(200, T0)
    second = client.post_request()
    assert second is not None and second.body == b"4" + b"y" * 300


def test_websocket_that_never_opens_fails_the_upgrade() -> None:
    client = opened_client()
    assert client.should_upgrade
    client.websocket_closed(T0)
    assert client.upgrade_state == "failed" and not client.should_upgrade
    assert client.is_open and client.transport == "polling"
    assert client.poll_request() is not None


def test_upgrade_abandoned_while_paused_resumes_polling_in_order() -> None:
    client = opened_client()
    client.take_events()
    assert client.poll_request() is not None
    client.websocket_opened(T0)
    client.take_websocket_outgoing()
    client.websocket_message("3probe", T0)
    client.send("a")
    assert client.upgrade_state == "pausing" and client.post_request() is None
    client.fail_upgrade()  # e.g. the GET never came back in time
    assert client.take_websocket_outgoing() == ([], True)
    client.send("b")
    post = client.post_request()
    assert post is not None and post.body == b"4a\x1e4b"
    client.poll_response(200, b"6", T0)
    assert client.transport == "polling" and client.poll_request() is not None
    assert client.take_events() == []


def test_close_while_pausing_flushes_over_polling() -> None:
    client = opened_client()
    assert client.poll_request() is not None  # keeps the client pausing
    client.websocket_opened(T0)
    client.take_websocket_outgoing()
    client.websocket_message("3probe", T0)
    client.send("last")
    client.close()
    assert client.take_websocket_outgoing() == ([], True)
    post = client.post_request()
    assert post is not None and post.body == b"4last\x1e1"


def test_probe_websocket_lost_while_pausing_keeps_polling() -> None:
    client = opened_client()
    assert client.poll_request() is not None
    client.websocket_opened(T0)
    client.take_websocket_outgoing()
    client.websocket_message("3probe", T0)
    client.take_events()
    client.websocket_closed(T0)
    assert client.is_open and client.upgrade_state == "failed" and client.transport == "polling"
    client.poll_response(200, b"6", T0)
    assert client.poll_request() is not None


def test_websocket_lost_after_upgrade_is_transport_close() -> None:
    client = opened_client()
    client.websocket_opened(T0)
    client.take_websocket_outgoing()
    client.websocket_message("3probe", T0)  # nothing in flight: the upgrade completes
    assert client.transport == "websocket"
    client.take_events()
    client.websocket_closed(T0)
    assert client.take_events() == [ClientClosed("transport close", "websocket closed")]


def test_ping_answered_with_pong_and_deadline_rearmed() -> None:
    client = opened_client()
    assert client.next_deadline() == pytest.approx(T0 + 0.5)
    client.poll_request()
    client.poll_response(200, b"2", T0 + 0.3)
    assert client.next_deadline() == pytest.approx(T0 + 0.8)
    request = client.post_request()
    assert request is not None and request.body == b"3"


def test_no_ping_is_ping_timeout() -> None:
    client = opened_client()
    client.take_events()
    client.handle_timers(T0 + 0.5)
    assert client.take_events() == [ClientClosed("ping timeout", "")]


def test_server_close_packet() -> None:
    client = opened_client()
    client.poll_request()
    client.poll_response(200, b"1", T0)
    assert client.closed and client.take_events()[-1].reason == "transport close"  # type: ignore[union-attr]


def test_http_error_is_transport_error() -> None:
    client = opened_client()
    client.poll_request()
    client.poll_response(400, b"", T0)
    assert client.take_events()[-1] == ClientClosed("transport error", "poll returned HTTP 400")


def test_client_close_flushes_then_sends_close() -> None:
    client = opened_client()
    client.send("bye")
    client.close()
    assert client.send("late") is False
    request = client.post_request()
    assert request is not None and request.body == b"4bye\x1e1"


def test_upgrade_client_side() -> None:
    client = opened_client()
    client.take_events()
    ws = client.websocket_request()
    assert dict(ws.query) == {"EIO": "4", "transport": "websocket", "sid": "abc"}
    assert client.poll_request() is not None  # a GET is in flight during the probe
    client.websocket_opened(T0)
    assert client.take_websocket_outgoing() == (["2probe"], False)
    client.send("queued")
    client.websocket_message("3probe", T0)
    assert client.poll_request() is None and client.post_request() is None  # paused
    assert client.take_websocket_outgoing() == ([], False)  # waits for the GET
    client.poll_response(200, b"6", T0)
    assert client.take_events() == [ClientUpgraded("websocket")]
    assert client.take_websocket_outgoing() == (["5", "4queued"], False)
    client.websocket_message("4over-ws", T0)
    assert client.take_events() == [ClientMessage("over-ws")]


def test_failed_probe_keeps_polling() -> None:
    client = opened_client()
    client.websocket_opened(T0)
    client.take_websocket_outgoing()
    client.websocket_message("4nope", T0)
    assert client.take_websocket_outgoing() == ([], True)
    assert client.transport == "polling" and client.is_open
    assert client.poll_request() is not None


def test_websocket_only_client() -> None:
    client = EngineIOClient(ClientConfig(transports=("websocket",)))
    assert client.transport == "websocket"
    assert "sid" not in client.websocket_request().query
    client.websocket_opened(T0)
    client.websocket_message('0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1}', T0)
    assert isinstance(client.take_events()[0], ClientOpened)
    client.send(b"\x09")
    assert client.take_websocket_outgoing() == ([b"\x09"], False)
    client.websocket_closed(T0)
    assert client.take_events() == [ClientClosed("transport close", "websocket closed")]


# ------------------------------------------------------------------ client against server


def _to_server(request: object) -> HttpRequest:
    from volleyio.engineio.client import ClientRequest

    assert isinstance(request, ClientRequest)
    return HttpRequest(request.method, request.path, dict(request.query), dict((k.lower(), v) for k, v in request.headers))


def test_client_and_server_full_session_with_upgrade() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200))
    client = EngineIOClient()
    handshake = server.handle_request(_to_server(client.handshake_request()), T0)
    assert isinstance(handshake, HttpResponse)
    client.poll_response(handshake.status, handshake.body, T0)
    sid = client.sid
    assert sid is not None and server.session(sid) is not None
    # message client -> server over polling
    client.send("hello")
    post = client.post_request()
    assert post is not None
    outcome = server.handle_request(_to_server(post), T0)
    assert isinstance(outcome, ReadBody)
    client.post_response(server.post_body(sid, post.body, T0).status, T0)
    assert MessageReceived(sid, "hello") in server.take_events()
    # server ping reaches the parked GET; the client answers
    poll = client.poll_request()
    assert isinstance(server.handle_request(_to_server(poll), T0), PollParked)
    server.handle_timers(T0 + 0.3)
    ready = server.poll_ready(sid, T0 + 0.3)
    assert ready is not None
    client.poll_response(ready.status, ready.body, T0 + 0.3)
    pong = client.post_request()
    assert pong is not None and pong.body == b"3"
    server.handle_request(_to_server(pong), T0 + 0.3)
    client.post_response(server.post_body(sid, pong.body, T0 + 0.3).status, T0 + 0.3)
    # upgrade
    assert client.should_upgrade
    accept = server.handle_request(
        HttpRequest("GET", "/engine.io/", dict(client.websocket_request().query), websocket_upgrade=True), T0 + 0.31
    )
    assert isinstance(accept, AcceptWebSocket) and accept.channel is not None
    channel = accept.channel
    poll = client.poll_request()
    assert isinstance(server.handle_request(_to_server(poll), T0 + 0.31), PollParked)
    client.websocket_opened(T0 + 0.31)
    server.send(sid, "during-upgrade")

    def pump_ws() -> None:
        for _ in range(5):
            frames, _ = client.take_websocket_outgoing()
            for frame in frames:
                channel.receive(frame, T0 + 0.32)
            server_frames, _ = channel.take_outgoing()
            for server_frame in server_frames:
                assert isinstance(server_frame, (str, bytes))  # no PreparedPacket was sent
                client.websocket_message(server_frame, T0 + 0.32)

    # the parked GET already holds the buffered message
    first = server.poll_ready(sid, T0 + 0.31)
    assert first is not None and first.body == b"4during-upgrade"
    client.poll_response(200, first.body, T0 + 0.31)
    poll = client.poll_request()
    assert isinstance(server.handle_request(_to_server(poll), T0 + 0.31), PollParked)
    pump_ws()  # 2probe -> 3probe; the client pauses, waiting for the GET
    noop = server.poll_ready(sid, T0 + 0.32)
    assert noop is not None and noop.body == b"6"
    client.poll_response(200, noop.body, T0 + 0.32)
    server.send(sid, "after-noop")
    pump_ws()  # 5 -> the server flushes on the WebSocket
    assert client.transport == "websocket" and server.session(sid).transport == "websocket"  # type: ignore[union-attr]
    events = client.take_events()
    assert [e for e in events if isinstance(e, ClientMessage)] == [
        ClientMessage("during-upgrade"),
        ClientMessage("after-noop"),
    ]
    assert Upgraded(sid, "websocket") in server.take_events()
    # heartbeat over WebSocket
    server.handle_timers(T0 + 0.62)
    pump_ws()
    server.handle_timers(T0 + 0.83)
    assert server.session(sid) is not None
    # the client closes
    client.close()
    frames, close = client.take_websocket_outgoing()
    assert frames == ["1"] and close
    channel.receive("1", T0 + 0.9)
    assert channel.take_outgoing() == ([], True)
    assert server.session(sid) is None
