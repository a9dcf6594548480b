"""The sans-I/O Engine.IO server session manager (PROTOCOL-NOTES "Engine.IO v4")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from volleyio.engineio.server import (
    AcceptWebSocket,
    Connected,
    CorsConfig,
    Disconnected,
    DisconnectReason,
    EngineIOServer,
    HttpRequest,
    HttpResponse,
    MessageReceived,
    PollParked,
    ReadBody,
    RefuseWebSocket,
    ServerConfig,
    Upgraded,
    WebSocketChannel,
)

T0 = 1000.0


def req(
    method: str = "GET",
    *,
    transport: str | None = "polling",
    sid: str | None = None,
    eio: str | None = "4",
    headers: dict[str, str] | None = None,
    upgrade: bool = False,
    extra: dict[str, str] | None = None,
) -> HttpRequest:
    query: dict[str, str] = {}
    if eio is not None:
        query["EIO"] = eio
    if transport is not None:
        query["transport"] = transport
    if sid is not None:
        query["sid"] = sid
    query.update(extra or {})
    return HttpRequest(method, "/engine.io/", query, headers or {}, websocket_upgrade=upgrade)


def handshake(server: EngineIOServer, now: float = T0) -> str:
    response = server.handle_request(req(), now)
    assert isinstance(response, HttpResponse)
    assert response.body.startswith(b"0{")
    sid: str = json.loads(response.body[1:])["sid"]
    return sid


def get(server: EngineIOServer, sid: str, now: float = T0) -> HttpResponse | PollParked:
    outcome = server.handle_request(req(sid=sid), now)
    assert isinstance(outcome, (HttpResponse, PollParked))
    return outcome


def post(server: EngineIOServer, sid: str, body: bytes, now: float = T0) -> HttpResponse:
    outcome = server.handle_request(req("POST", sid=sid), now)
    if isinstance(outcome, HttpResponse):
        return outcome
    assert isinstance(outcome, ReadBody)
    return server.post_body(sid, body, now)


def json_error(response: HttpResponse | object) -> tuple[int, dict[str, object]]:
    assert isinstance(response, HttpResponse)
    assert response.header("Content-Type") == "application/json"
    return response.status, json.loads(response.body)


@pytest.fixture
def server() -> EngineIOServer:
    return EngineIOServer()


# ------------------------------------------------------------------ checks and errors


@pytest.mark.parametrize(
    ("request_", "status", "body"),
    [
        (req(transport=None), 400, {"code": 0, "message": "Transport unknown"}),
        (req(transport="flash"), 400, {"code": 0, "message": "Transport unknown"}),
        (req(transport="webtransport"), 400, {"code": 0, "message": "Transport unknown"}),
        (req(sid="nope"), 400, {"code": 1, "message": "Session ID unknown"}),
        (req("POST"), 400, {"code": 2, "message": "Bad handshake method"}),
        (req("PUT"), 400, {"code": 2, "message": "Bad handshake method"}),
        (req(transport="websocket"), 400, {"code": 3, "message": "Bad request"}),
        (req(eio="3"), 400, {"code": 5, "message": "Unsupported protocol version"}),
        (req(eio=None), 400, {"code": 5, "message": "Unsupported protocol version"}),
        (req(eio="abc"), 400, {"code": 5, "message": "Unsupported protocol version"}),
        (req(headers={"origin": "http://a\x01b"}), 400, {"code": 3, "message": "Bad request"}),
    ],
)
def test_request_errors_exact_json(
    server: EngineIOServer, request_: HttpRequest, status: int, body: dict[str, object]
) -> None:
    assert json_error(server.handle_request(request_, T0)) == (status, body)
    assert server.statistics()["sessions"] == 0


def test_check_order_transport_before_sid(server: EngineIOServer) -> None:
    assert json_error(server.handle_request(req(transport="x", sid="nope"), T0))[1]["code"] == 0


def test_check_order_sid_before_method(server: EngineIOServer) -> None:
    assert json_error(server.handle_request(req("PUT", sid="nope"), T0))[1]["code"] == 1


def test_check_order_method_before_version(server: EngineIOServer) -> None:
    assert json_error(server.handle_request(req("POST", eio="3"), T0))[1]["code"] == 2


def test_check_order_forbidden_before_version() -> None:
    server = EngineIOServer(ServerConfig(allow_request=lambda r: "go away"))
    assert json_error(server.handle_request(req(eio="3"), T0)) == (403, {"code": 4, "message": "go away"})


def test_allow_request_forbidden_403() -> None:
    server = EngineIOServer(ServerConfig(allow_request=lambda r: "Forbidden"))
    assert json_error(server.handle_request(req(), T0)) == (403, {"code": 4, "message": "Forbidden"})


def test_allow_request_none_allows() -> None:
    server = EngineIOServer(ServerConfig(allow_request=lambda r: None))
    handshake(server)


def test_eio_not_checked_after_handshake(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert isinstance(server.handle_request(req(sid=sid, eio=None), T0), PollParked)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req(transport="flash", upgrade=True), "Transport unknown"),
        (req(transport="websocket", sid="nope", upgrade=True), "Session ID unknown"),
        (req(transport="websocket", eio="3", upgrade=True), "Unsupported protocol version"),
        (req(transport="websocket", upgrade=True, headers={"origin": "http://evil", "host": "ok"}), "Forbidden"),
    ],
)
def test_websocket_errors_are_raw_400(server: EngineIOServer, request_: HttpRequest, message: str) -> None:
    outcome = server.handle_request(request_, T0)
    assert outcome == RefuseWebSocket(message)
    assert isinstance(outcome, RefuseWebSocket)
    raw = outcome.raw_response()
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert raw.endswith(b"\r\n\r\n" + message.encode())
    assert f"Content-Length: {len(message)}\r\n".encode() in raw


# ------------------------------------------------------------------ handshake


def test_open_packet_has_exactly_five_keys(server: EngineIOServer) -> None:
    response = server.handle_request(req(), T0)
    assert isinstance(response, HttpResponse)
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain; charset=UTF-8"
    assert response.header("Content-Length") == str(len(response.body))
    data = json.loads(response.body[1:])
    assert response.body[:1] == b"0"
    assert sorted(data) == ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]
    assert data["upgrades"] == ["websocket"]
    assert (data["pingInterval"], data["pingTimeout"], data["maxPayload"]) == (25000, 20000, 1000000)


def test_open_packet_values_never_rounded() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200, max_payload=12345))
    response = server.handle_request(req(), T0)
    assert isinstance(response, HttpResponse)
    data = json.loads(response.body[1:])
    assert (data["pingInterval"], data["pingTimeout"], data["maxPayload"]) == (300, 200, 12345)


def test_no_upgrades_when_disabled() -> None:
    server = EngineIOServer(ServerConfig(allow_upgrades=False))
    response = server.handle_request(req(), T0)
    assert isinstance(response, HttpResponse)
    assert json.loads(response.body[1:])["upgrades"] == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_config_durations_must_be_positive_int_ms(bad: object) -> None:
    with pytest.raises(ValueError):
        ServerConfig(ping_interval_ms=bad)  # type: ignore[arg-type]


def test_config_refuses_short_sids() -> None:
    with pytest.raises(ValueError):
        ServerConfig(sid_bytes=8)


def test_sids_are_unique_urlsafe_and_long(server: EngineIOServer) -> None:
    import base64

    sids = {handshake(server) for _ in range(50)}
    assert len(sids) == 50
    for sid in sids:
        assert set(sid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4))) >= 16


def test_handshake_emits_connected(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert server.take_events() == [Connected(sid, "polling")]
    assert server.take_events() == []


def test_cookie_option_sets_cookie_on_handshake_only() -> None:
    server = EngineIOServer(ServerConfig(cookie="io"))
    response = server.handle_request(req(), T0)
    assert isinstance(response, HttpResponse)
    sid = json.loads(response.body[1:])["sid"]
    assert response.header("Set-Cookie") == f"io={sid}; Path=/; HttpOnly; SameSite=Lax"
    server.session(sid).send("x")  # type: ignore[union-attr]
    later = get(server, sid)
    assert isinstance(later, HttpResponse) and later.header("Set-Cookie") is None


def test_cache_buster_ignored(server: EngineIOServer) -> None:
    assert isinstance(server.handle_request(req(extra={"t": "Nabc"}), T0), HttpResponse)


# ------------------------------------------------------------------ polling GET / POST


def test_get_with_nothing_to_send_is_parked(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert get(server, sid) == PollParked(sid)
    assert server.poll_ready(sid, T0) is None


def test_send_releases_parked_get_and_wakes(server: EngineIOServer) -> None:
    sid = handshake(server)
    get(server, sid)
    woken: list[int] = []
    server.set_poll_waker(sid, lambda: woken.append(1))
    session = server.session(sid)
    assert session is not None
    assert session.send("hello") is True
    assert woken
    response = server.poll_ready(sid, T0)
    assert response is not None and response.body == b"4hello"
    assert response.header("Content-Type") == "text/plain; charset=UTF-8"
    assert server.poll_ready(sid, T0) is None  # answered once


def test_buffered_messages_returned_immediately_in_one_payload(server: EngineIOServer) -> None:
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    session.send("hello")
    session.send(b"\x01\x02\x03\x04")
    response = get(server, sid)
    assert isinstance(response, HttpResponse)
    assert response.body == b"4hello\x1ebAQIDBA=="


def test_get_response_capped_at_16_packets(server: EngineIOServer) -> None:
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    for i in range(20):
        session.send(str(i))
    first = get(server, sid)
    assert isinstance(first, HttpResponse)
    assert first.body.split(b"\x1e") == [f"4{i}".encode() for i in range(16)]
    second = get(server, sid)
    assert isinstance(second, HttpResponse)
    assert second.body.split(b"\x1e") == [f"4{i}".encode() for i in range(16, 20)]


def test_content_length_counts_utf8_bytes(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.send(sid, "é😀")
    response = get(server, sid)
    assert isinstance(response, HttpResponse)
    assert response.body == "4é😀".encode()
    assert response.header("Content-Length") == str(len("4é😀".encode()))


def test_post_is_ok_text_html(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.take_events()
    outcome = server.handle_request(req("POST", sid=sid), T0)
    assert outcome == ReadBody(sid, 1_000_000)
    response = server.post_body(sid, b"4hello\x1ebAQIDBA==", T0)
    assert (response.status, response.body) == (200, b"ok")
    assert response.header("Content-Type") == "text/html"
    assert server.take_events() == [MessageReceived(sid, "hello"), MessageReceived(sid, b"\x01\x02\x03\x04")]


def test_post_accepts_more_than_16_packets(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.take_events()
    post(server, sid, b"\x1e".join([b"4x"] * 40))
    assert len(server.take_events()) == 40


def test_post_octet_stream_is_400_and_closes(server: EngineIOServer) -> None:
    sid = handshake(server)
    outcome = server.handle_request(
        req("POST", sid=sid, headers={"content-type": "application/octet-stream"}), T0
    )
    assert isinstance(outcome, HttpResponse) and outcome.status == 400
    assert server.session(sid) is None


def test_post_too_large_is_413_and_limit_is_max_payload() -> None:
    server = EngineIOServer(ServerConfig(max_payload=10))
    sid = handshake(server)
    outcome = server.handle_request(req("POST", sid=sid), T0)
    assert outcome == ReadBody(sid, 10)
    assert server.max_body_size == 10
    assert server.post_too_large(sid, T0).status == 413
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.MESSAGE_TOO_BIG, "POST body over maxPayload")


def test_post_body_over_limit_is_413_even_if_not_streamed_check() -> None:
    server = EngineIOServer(ServerConfig(max_payload=10))
    sid = handshake(server)
    assert post(server, sid, b"4" + b"x" * 20).status == 413


@pytest.mark.parametrize("body", [b"abc", b"", b"4a\x1e", b"b!!", b"\xff"])
def test_invalid_post_closes_session_with_parse_error(server: EngineIOServer, body: bytes) -> None:
    sid = handshake(server)
    server.take_events()
    assert post(server, sid, body).status == 400
    assert server.take_events()[-1].reason is DisconnectReason.PARSE_ERROR  # type: ignore[union-attr]
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_post_close_packet_closes_and_pending_get_gets_noop(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert get(server, sid) == PollParked(sid)
    assert post(server, sid, b"1").body == b"ok"
    response = server.poll_ready(sid, T0)
    assert response is not None and response.body == b"6"
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.CLIENT_CLOSE, "")
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_post_close_without_pending_get_forgets_session(server: EngineIOServer) -> None:
    sid = handshake(server)
    post(server, sid, b"1")
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_packets_after_close_in_same_post_are_ignored(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.take_events()
    post(server, sid, b"4a\x1e1\x1e4b")
    assert [type(e) for e in server.take_events()] == [MessageReceived, Disconnected]


def test_second_concurrent_get_is_400_and_first_gets_close(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert get(server, sid) == PollParked(sid)
    overlap = server.handle_request(req(sid=sid), T0)
    assert isinstance(overlap, HttpResponse) and overlap.status == 400
    first = server.poll_ready(sid, T0)
    assert first is not None and first.body == b"1"
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.TRANSPORT_ERROR, "overlap from client")
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_concurrent_post_is_400_and_closes(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert isinstance(server.handle_request(req("POST", sid=sid), T0), ReadBody)
    overlap = server.handle_request(req("POST", sid=sid), T0)
    assert isinstance(overlap, HttpResponse) and overlap.status == 400
    assert server.session(sid) is None


def test_cancelled_get_closes_session(server: EngineIOServer) -> None:
    sid = handshake(server)
    get(server, sid)
    server.poll_cancelled(sid, T0)
    assert server.take_events()[-1] == Disconnected(
        sid, DisconnectReason.TRANSPORT_ERROR, "poll connection closed prematurely"
    )
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_aborted_post_closes_session(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.handle_request(req("POST", sid=sid), T0)
    server.post_aborted(sid, T0)
    assert server.session(sid) is None


def test_unknown_method_with_sid_is_bad_request(server: EngineIOServer) -> None:
    sid = handshake(server)
    assert json_error(server.handle_request(req("DELETE", sid=sid), T0)) == (400, {"code": 3, "message": "Bad request"})


# ------------------------------------------------------------------ heartbeat


def test_server_pings_every_interval_over_polling() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200))
    sid = handshake(server)
    assert server.next_deadline() == pytest.approx(T0 + 0.3)
    assert get(server, sid) == PollParked(sid)
    woken: list[int] = []
    server.set_poll_waker(sid, lambda: woken.append(1))
    server.handle_timers(T0 + 0.299)
    assert server.poll_ready(sid, T0 + 0.299) is None
    server.handle_timers(T0 + 0.3)
    assert woken
    response = server.poll_ready(sid, T0 + 0.3)
    assert response is not None and response.body == b"2"
    assert server.next_deadline() == pytest.approx(T0 + 0.5)  # pong deadline
    post(server, sid, b"3", T0 + 0.35)
    assert server.next_deadline() == pytest.approx(T0 + 0.65)  # re-armed on pong
    server.handle_timers(T0 + 0.65)
    assert get(server, sid, T0 + 0.65) == HttpResponse(
        200, (("Content-Type", "text/plain; charset=UTF-8"), ("Content-Length", "1")), b"2"
    )


def test_missing_pong_is_ping_timeout() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200))
    sid = handshake(server)
    server.take_events()
    server.handle_timers(T0 + 0.3)
    server.handle_timers(T0 + 0.49)
    assert server.session(sid) is not None
    server.handle_timers(T0 + 0.5)
    assert server.take_events() == [Disconnected(sid, DisconnectReason.PING_TIMEOUT, "")]
    assert server.session(sid) is None
    assert server.next_deadline() is None


def test_other_packets_extend_the_pong_deadline_once_per_ping() -> None:
    """Node (Socket.onPacket): while a pong is awaited, the first other packet refreshes
    the ping timeout once; the client must still answer eventually."""
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200))
    sid = handshake(server)
    server.take_events()
    server.handle_timers(T0 + 0.3)  # ping sent, pong due at +0.5
    assert post(server, sid, b"4busy", T0 + 0.45).status == 200
    assert post(server, sid, b"4more", T0 + 0.6).status == 200  # not extended again
    server.handle_timers(T0 + 0.64)
    assert server.session(sid) is not None  # deadline moved to +0.65 by "4busy"
    server.handle_timers(T0 + 0.66)
    events = server.take_events()
    assert events[-1] == Disconnected(sid, DisconnectReason.PING_TIMEOUT, "")
    # With the pong, the next ping gets its own refresh.
    sid = handshake(server, T0 + 1)
    server.handle_timers(T0 + 1.3)
    assert post(server, sid, b"4a" + b"\x1e" + b"4b", T0 + 1.45).status == 200
    assert post(server, sid, b"3", T0 + 1.6).status == 200  # the pong, before +1.65
    server.handle_timers(T0 + 1.9)  # next ping; pong due at +2.1
    assert post(server, sid, b"4c", T0 + 2.05).status == 200
    server.handle_timers(T0 + 2.2)
    assert server.session(sid) is not None
    server.handle_timers(T0 + 2.26)
    assert server.session(sid) is None


def test_client_ping_is_protocol_error_in_v4(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.take_events()
    post(server, sid, b"2")
    assert server.take_events() == [Disconnected(sid, DisconnectReason.TRANSPORT_ERROR, "invalid heartbeat direction")]


def test_next_deadline_is_earliest_over_sessions() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=1000))
    handshake(server, T0 + 5)
    handshake(server, T0)
    assert server.next_deadline() == pytest.approx(T0 + 1)


def test_timer_waker_called_for_earlier_deadline() -> None:
    server = EngineIOServer()
    woken: list[int] = []
    server.set_timer_waker(lambda: woken.append(1))
    handshake(server)
    assert woken


# ------------------------------------------------------------------ application API


def test_server_close_delivers_buffer_then_close_packet(server: EngineIOServer) -> None:
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    session.send("bye")
    session.close(T0)
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.FORCED_CLOSE, "")
    assert session.send("late") is False
    response = get(server, sid)
    assert isinstance(response, HttpResponse) and response.body == b"4bye\x1e1"
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 1


def test_server_close_answers_parked_get_with_close(server: EngineIOServer) -> None:
    sid = handshake(server)
    get(server, sid)
    server.close(sid, T0)
    response = server.poll_ready(sid, T0)
    assert response is not None and response.body == b"1"


def test_forced_close_forgotten_if_never_polled() -> None:
    server = EngineIOServer(ServerConfig(ping_timeout_ms=200))
    sid = handshake(server)
    server.close(sid, T0)
    server.handle_timers(T0 + 0.2)
    assert json_error(server.handle_request(req(sid=sid), T0 + 0.2))[1]["code"] == 1


def test_slow_consumer_closes_session() -> None:
    server = EngineIOServer(ServerConfig(max_buffered_bytes=10))
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    assert session.send("12345") is True
    assert session.buffered_amount == 5
    assert session.send("123456") is False
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.SLOW_CONSUMER, "outgoing buffer full")


def test_volatile_send_over_polling_needs_a_parked_get(server: EngineIOServer) -> None:
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    assert not session.writable
    assert session.send("dropped", volatile=True) is False
    assert get(server, sid) == PollParked(sid)
    assert session.writable
    assert session.send("a", volatile=True) is True
    assert session.send("b", volatile=True) is False  # "a" is still waiting
    assert session.is_open
    response = server.poll_ready(sid, T0)
    assert response is not None and response.body == b"4a"


def test_volatile_send_over_websocket_needs_empty_buffer(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    session = server.session(sid)
    assert session is not None
    assert session.send("x", volatile=True) is False  # the open packet is not drained yet
    channel.take_outgoing()
    assert session.send("x", volatile=True) is True
    assert session.send("y", volatile=True) is False
    assert channel.take_outgoing() == (["4x"], False)


def test_close_all(server: EngineIOServer) -> None:
    sids = [handshake(server) for _ in range(3)]
    server.take_events()
    server.close_all(T0)
    assert {e.sid for e in server.take_events() if isinstance(e, Disconnected)} == set(sids)
    assert server.statistics()["sessions"] == 0


def test_statistics(server: EngineIOServer) -> None:
    sid = handshake(server)
    session = server.session(sid)
    assert session is not None
    post(server, sid, b"4hi")
    stats = session.statistics()
    assert stats["sid"] == sid and stats["transport"] == "polling"
    assert stats["messages_in"] == 1 and stats["packets_out"] == 1
    assert server.statistics()["sessions"] == 1


# ------------------------------------------------------------------ WebSocket


def ws_handshake(server: EngineIOServer) -> tuple[str, WebSocketChannel]:
    outcome = server.handle_request(req(transport="websocket", upgrade=True), T0)
    assert isinstance(outcome, AcceptWebSocket) and outcome.channel is not None
    assert outcome.sid is not None and not outcome.close_immediately
    return outcome.sid, outcome.channel


def test_websocket_only_session_open_packet(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    frames, close = channel.take_outgoing()
    assert not close and len(frames) == 1
    assert isinstance(frames[0], str) and frames[0].startswith("0")
    data = json.loads(frames[0][1:])
    assert data["sid"] == sid and data["upgrades"] == []
    assert sorted(data) == ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]
    assert server.take_events() == [Connected(sid, "websocket")]


def test_websocket_messages_both_ways(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    channel.take_outgoing()
    server.take_events()
    channel.receive("4hello", T0)
    channel.receive(b"\x01\x02", T0)
    assert server.take_events() == [MessageReceived(sid, "hello"), MessageReceived(sid, b"\x01\x02")]
    server.send(sid, "x")
    server.send(sid, b"\x03")
    assert channel.take_outgoing() == (["4x", b"\x03"], False)


def test_websocket_ping_pong(server: EngineIOServer) -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=300, ping_timeout_ms=200))
    sid, channel = ws_handshake(server)
    channel.take_outgoing()
    server.handle_timers(T0 + 0.3)
    assert channel.take_outgoing() == (["2"], False)
    channel.receive("3", T0 + 0.4)
    server.handle_timers(T0 + 0.6)
    assert server.session(sid) is not None


def test_websocket_client_close(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    channel.take_outgoing()
    channel.receive("1", T0)
    assert channel.take_outgoing() == ([], True)
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.CLIENT_CLOSE, "")


def test_websocket_parse_error_closes(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    channel.take_outgoing()
    channel.receive("9", T0)
    assert channel.take_outgoing() == ([], True)
    assert server.take_events()[-1].reason is DisconnectReason.PARSE_ERROR  # type: ignore[union-attr]


def test_websocket_too_big_reported_by_io_layer(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    channel.connection_lost(T0, DisconnectReason.MESSAGE_TOO_BIG)
    assert server.take_events()[-1] == Disconnected(sid, DisconnectReason.MESSAGE_TOO_BIG, "")
    assert server.session(sid) is None


def test_websocket_forced_close_flushes_then_closes(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    channel.take_outgoing()
    server.send(sid, "bye")
    server.close(sid, T0)
    assert channel.take_outgoing() == (["4bye"], True)


def test_websocket_waker(server: EngineIOServer) -> None:
    sid, channel = ws_handshake(server)
    woken: list[int] = []
    channel.set_waker(lambda: woken.append(1))
    server.send(sid, "x")
    assert woken


def test_polling_on_websocket_session_is_transport_mismatch(server: EngineIOServer) -> None:
    sid, _ = ws_handshake(server)
    assert json_error(server.handle_request(req(sid=sid), T0)) == (400, {"code": 3, "message": "Bad request"})


def test_websocket_upgrade_with_polling_transport_accept_then_close(server: EngineIOServer) -> None:
    outcome = server.handle_request(req(transport="polling", upgrade=True), T0)
    assert isinstance(outcome, AcceptWebSocket) and outcome.close_immediately and outcome.channel is None


# ------------------------------------------------------------------ upgrade


def start_upgrade(server: EngineIOServer, sid: str, now: float = T0) -> WebSocketChannel:
    outcome = server.handle_request(req(transport="websocket", sid=sid, upgrade=True), now)
    assert isinstance(outcome, AcceptWebSocket) and outcome.channel is not None
    assert not outcome.close_immediately
    return outcome.channel


def test_full_upgrade_flow(server: EngineIOServer) -> None:
    sid = handshake(server)
    server.take_events()
    assert get(server, sid) == PollParked(sid)
    channel = start_upgrade(server, sid)
    assert server.session(sid).upgrading  # type: ignore[union-attr]
    channel.receive("2probe", T0)
    assert channel.take_outgoing() == (["3probe"], False)
    # the pending GET is released with a noop so the client can pause polling
    noop = server.poll_ready(sid, T0)
    assert noop is not None and noop.body == b"6"
    # a new GET while upgrading also gets a noop
    fresh = get(server, sid)
    assert isinstance(fresh, HttpResponse) and fresh.body == b"6"
    server.send(sid, "buffered-1")
    server.send(sid, "buffered-2")
    channel.receive("5", T0)
    assert server.take_events() == [Upgraded(sid, "websocket")]
    # flushed on the WebSocket in order, with no stray noop
    assert channel.take_outgoing() == (["4buffered-1", "4buffered-2"], False)
    channel.receive("4hello", T0)
    assert server.take_events() == [MessageReceived(sid, "hello")]
    assert server.session(sid).transport == "websocket"  # type: ignore[union-attr]
    # polling after upgrade: transport mismatch
    assert json_error(server.handle_request(req(sid=sid), T0))[1]["code"] == 3
    assert json_error(server.handle_request(req("POST", sid=sid), T0))[1]["code"] == 3


def test_packets_sent_before_upgrade_completes_go_to_one_transport_only(server: EngineIOServer) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    channel.receive("2probe", T0)
    channel.take_outgoing()
    for i in range(20):
        server.send(sid, str(i))
    polled = get(server, sid)
    assert isinstance(polled, HttpResponse)
    via_polling = polled.body.split(b"\x1e")
    channel.receive("5", T0)
    frames, _ = channel.take_outgoing()
    assert [p.decode() for p in via_polling] + list(frames) == [f"4{i}" for i in range(20)]  # type: ignore[operator]


def test_parked_get_at_upgrade_completion_gets_noop(server: EngineIOServer) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    get(server, sid)
    channel.receive("5", T0)
    response = server.poll_ready(sid, T0)
    assert response is not None and response.body == b"6"


def test_second_websocket_while_upgrading_accept_then_close(server: EngineIOServer) -> None:
    sid = handshake(server)
    start_upgrade(server, sid)
    outcome = server.handle_request(req(transport="websocket", sid=sid, upgrade=True), T0)
    assert isinstance(outcome, AcceptWebSocket) and outcome.close_immediately and outcome.channel is None


def test_second_websocket_after_upgrade_accept_then_close(server: EngineIOServer) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    channel.receive("2probe", T0)
    channel.receive("5", T0)
    outcome = server.handle_request(req(transport="websocket", sid=sid, upgrade=True), T0)
    assert isinstance(outcome, AcceptWebSocket) and outcome.close_immediately


def test_upgrade_timeout_closes_websocket_keeps_polling() -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=60_000, ping_timeout_ms=60_000))
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    assert server.next_deadline() == pytest.approx(T0 + 10)
    server.handle_timers(T0 + 9.9)
    assert channel.take_outgoing() == ([], False)
    server.handle_timers(T0 + 10)
    assert channel.take_outgoing() == ([], True)
    session = server.session(sid)
    assert session is not None and session.transport == "polling" and not session.upgrading
    # a later upgrade attempt is allowed again
    start_upgrade(server, sid, T0 + 11)


@pytest.mark.parametrize("frame", ["4hello", "2", "2other", "3probe", "9"])
def test_unexpected_packet_during_probe_aborts_upgrade(server: EngineIOServer, frame: str) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    channel.receive(frame, T0)
    assert channel.take_outgoing()[1] is True
    session = server.session(sid)
    assert session is not None and session.transport == "polling"


def test_probe_websocket_lost_keeps_polling_session(server: EngineIOServer) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    channel.connection_lost(T0)
    session = server.session(sid)
    assert session is not None and not session.upgrading


def test_session_close_during_upgrade_closes_probe(server: EngineIOServer) -> None:
    sid = handshake(server)
    channel = start_upgrade(server, sid)
    server.close(sid, T0)
    assert channel.take_outgoing()[1] is True


# ------------------------------------------------------------------ CORS and Origin


CorsServer = Callable[..., EngineIOServer]


def test_no_cors_headers_by_default(server: EngineIOServer) -> None:
    response = server.handle_request(req(headers={"origin": "http://x.test", "host": "x.test"}), T0)
    assert isinstance(response, HttpResponse)
    assert response.header("Access-Control-Allow-Origin") is None


def test_options_without_cors_is_bad_handshake_method(server: EngineIOServer) -> None:
    assert json_error(server.handle_request(req("OPTIONS"), T0))[1]["code"] == 2


def test_cors_allow_list_echo_and_vary() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins=("https://app.test",))))
    response = server.handle_request(req(headers={"origin": "https://app.test"}), T0)
    assert isinstance(response, HttpResponse) and response.status == 200
    assert response.header("Access-Control-Allow-Origin") == "https://app.test"
    assert response.header("Vary") == "Origin"
    assert response.header("Access-Control-Allow-Credentials") is None


def test_cors_origin_not_listed_is_forbidden_without_acao() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins=("https://app.test",))))
    response = server.handle_request(req(headers={"origin": "https://evil.test", "host": "srv.test"}), T0)
    assert json_error(response) == (403, {"code": 4, "message": "Forbidden"})
    assert isinstance(response, HttpResponse) and response.header("Access-Control-Allow-Origin") is None


def test_cors_credentials_echo_origin_even_with_star() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins="*", credentials=True)))
    response = server.handle_request(req(headers={"origin": "https://a.test"}), T0)
    assert isinstance(response, HttpResponse)
    assert response.header("Access-Control-Allow-Origin") == "https://a.test"
    assert response.header("Access-Control-Allow-Credentials") == "true"


@pytest.mark.parametrize("spelling", ["*", ["*"], ("https://b.test", "*")])
def test_any_origin_spelled_as_star_or_list_with_star(spelling: Any) -> None:
    config = ServerConfig(allowed_origins=spelling, cors=CorsConfig(allowed_origins=spelling))
    assert config.allowed_origins == "*" and config.cors is not None and config.cors.allowed_origins == "*"
    response = EngineIOServer(config).handle_request(req(headers={"origin": "https://a.test", "host": "s.test"}), T0)
    assert isinstance(response, HttpResponse) and response.status == 200
    assert response.header("Access-Control-Allow-Origin") == "*"


def test_a_single_origin_string_is_one_origin_not_its_characters() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins="https://app.test")))  # type: ignore[arg-type]
    assert server.config.cors is not None and server.config.cors.allowed_origins == ("https://app.test",)
    ok = server.handle_request(req(headers={"origin": "https://app.test", "host": "s.test"}), T0)
    assert isinstance(ok, HttpResponse) and ok.header("Access-Control-Allow-Origin") == "https://app.test"
    assert json_error(server.handle_request(req(headers={"origin": "h", "host": "s.test"}), T0))[0] == 403


def test_cors_star_without_credentials() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins="*")))
    response = server.handle_request(req(headers={"origin": "https://a.test"}), T0)
    assert isinstance(response, HttpResponse)
    assert response.header("Access-Control-Allow-Origin") == "*"


def test_cors_preflight_204() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins=("https://a.test",), max_age=600)))
    response = server.handle_request(
        req("OPTIONS", headers={"origin": "https://a.test", "access-control-request-headers": "content-type"}), T0
    )
    assert isinstance(response, HttpResponse) and response.status == 204
    assert response.header("Access-Control-Allow-Origin") == "https://a.test"
    assert response.header("Access-Control-Allow-Methods") == "GET,POST,OPTIONS"
    assert response.header("Access-Control-Allow-Headers") == "content-type"
    assert response.header("Access-Control-Max-Age") == "600"
    assert response.body == b""


def test_cors_headers_on_error_responses() -> None:
    server = EngineIOServer(ServerConfig(cors=CorsConfig(allowed_origins=("https://a.test",))))
    response = server.handle_request(req(sid="nope", headers={"origin": "https://a.test"}), T0)
    assert isinstance(response, HttpResponse) and response.status == 400
    assert response.header("Access-Control-Allow-Origin") == "https://a.test"


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://srv.test", "srv.test", True),
        ("http://srv.test:80", "srv.test", True),
        ("https://srv.test", "srv.test:443", True),
        ("http://srv.test:8080", "srv.test:8080", True),
        ("http://SRV.test:8080", "srv.TEST:8080", True),
        ("http://srv.test:8080", "srv.test", False),
        ("http://evil.test", "srv.test", False),
        ("null", "srv.test", False),
    ],
)
def test_same_origin_default(origin: str, host: str, allowed: bool) -> None:
    server = EngineIOServer()
    response = server.handle_request(req(headers={"origin": origin, "host": host}), T0)
    assert isinstance(response, HttpResponse)
    assert (response.status == 200) is allowed


def test_no_origin_header_allowed(server: EngineIOServer) -> None:
    handshake(server)


def test_explicit_origin_allow_list_and_star() -> None:
    listed = EngineIOServer(ServerConfig(allowed_origins=("http://a.test",)))
    ok = listed.handle_request(req(headers={"origin": "http://a.test", "host": "b.test"}), T0)
    assert isinstance(ok, HttpResponse) and ok.status == 200
    no = listed.handle_request(req(headers={"origin": "http://c.test", "host": "b.test"}), T0)
    assert isinstance(no, HttpResponse) and no.status == 403
    star = EngineIOServer(ServerConfig(allowed_origins="*"))
    anything = star.handle_request(req(headers={"origin": "http://c.test", "host": "b.test"}), T0)
    assert isinstance(anything, HttpResponse) and anything.status == 200




# ------------------------------------------------------------------ property: order across upgrade

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.integers(min_value=1, max_value=25)),
            st.tuples(st.just("get"), st.just(0)),
        ),
        max_size=30,
    ),
    upgrade_at=st.integers(min_value=0, max_value=30),
)
def test_every_message_delivered_once_in_order_across_upgrade(steps: list[tuple[str, int]], upgrade_at: int) -> None:
    server = EngineIOServer(ServerConfig(ping_interval_ms=10**9, ping_timeout_ms=10**9))
    sid = handshake(server)
    channel: WebSocketChannel | None = None
    received: list[str] = []
    counter = 0
    parked = False

    def collect_poll(body: bytes) -> None:
        for entry in body.decode().split("\x1e"):
            if entry.startswith("4"):
                received.append(entry[1:])

    for index, (kind, amount) in enumerate(steps):
        if index == upgrade_at:
            channel = start_upgrade(server, sid)
            channel.receive("2probe", T0)
        if kind == "send":
            for _ in range(amount):
                server.send(sid, str(counter))
                counter += 1
        elif server.session(sid).transport == "polling":  # type: ignore[union-attr]
            if parked:
                ready = server.poll_ready(sid, T0)
                if ready is None:
                    continue
                collect_poll(ready.body)
                parked = False
            else:
                outcome = get(server, sid)
                if isinstance(outcome, PollParked):
                    parked = True
                else:
                    collect_poll(outcome.body)
    if channel is None:
        channel = start_upgrade(server, sid)
        channel.receive("2probe", T0)
    if parked:
        ready = server.poll_ready(sid, T0)
        if ready is not None:
            collect_poll(ready.body)
    channel.receive("5", T0)
    frames, close = channel.take_outgoing()
    assert not close
    received.extend(f[1:] for f in frames if isinstance(f, str) and f.startswith("4"))
    assert received == [str(i) for i in range(counter)]
