"""Opening handshake on h11 (both roles) and the HTTP head guard."""

from __future__ import annotations

import base64
from typing import Optional

import h11
import pytest

from test_websocket_helpers import CountingExtension
from volleyio.errors import HandshakeError
from volleyio.websocket import (
    ClientHandshake,
    ExtensionParams,
    HandshakeAccepted,
    HandshakeRejected,
    RequestHeadGuard,
    Role,
    TextMessage,
    compute_accept,
    generate_key,
    is_same_origin,
    rejection_response,
    server_handshake,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(*, drop: tuple[str, ...] = (), replace: Optional[dict[str, str]] = None, extra: list[tuple[str, str]] | None = None,
                    method: str = "GET", http_version: str = "1.1") -> h11.Request:
    headers = {
        "Host": "example.com:8000",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    headers.update(replace or {})
    items = [(k, v) for k, v in headers.items() if k not in drop] + (extra or [])
    return h11.Request(method=method, target="/ws", headers=items, http_version=http_version)


def header(event: h11.InformationalResponse | h11.Response, name: bytes) -> list[bytes]:
    return [v for k, v in event.headers if k == name]


def test_compute_accept_rfc_example() -> None:
    assert compute_accept(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert compute_accept(KEY.encode()) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_generate_key_is_random_base64_of_16_bytes() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k)) == 16 for k in keys)


def test_server_accepts_valid_upgrade() -> None:
    result = server_handshake(upgrade_request(), extra_headers=[("X-Server", "volleyio")])
    assert isinstance(result, HandshakeAccepted)
    response = result.response
    assert response.status_code == 101
    assert header(response, b"upgrade") == [b"websocket"]
    assert header(response, b"connection") == [b"Upgrade"]
    assert header(response, b"sec-websocket-accept") == [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    assert header(response, b"sec-websocket-protocol") == []
    assert header(response, b"sec-websocket-extensions") == []
    assert header(response, b"x-server") == [b"volleyio"]
    assert result.connection.role is Role.SERVER
    assert result.subprotocol is None and result.extensions == []


def test_server_passes_connection_options() -> None:
    result = server_handshake(upgrade_request(), max_message_size=10, max_fragments=2, auto_pong=False, stream_messages=True)
    assert isinstance(result, HandshakeAccepted)
    conn = result.connection
    assert (conn.max_message_size, conn.max_fragments, conn.auto_pong, conn.stream_messages) == (10, 2, False, True)


REJECTIONS = [
    ("POST", dict(method="POST"), 405),
    ("HTTP/1.0", dict(http_version="1.0", replace={}), 400),
    ("no Upgrade", dict(drop=("Upgrade",)), 426),
    ("Upgrade: h2c", dict(replace={"Upgrade": "h2c"}), 426),
    ("no Connection", dict(drop=("Connection",)), 426),
    ("Connection: keep-alive", dict(replace={"Connection": "keep-alive"}), 426),
    ("no key", dict(drop=("Sec-WebSocket-Key",)), 400),
    ("key not base64", dict(replace={"Sec-WebSocket-Key": "not base64!!"}), 400),
    ("key 15 bytes", dict(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}), 400),
    ("key 17 bytes", dict(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}), 400),
    ("two keys", dict(extra=[("Sec-WebSocket-Key", KEY)]), 400),
    ("no version", dict(drop=("Sec-WebSocket-Version",)), 426),
    ("version 8", dict(replace={"Sec-WebSocket-Version": "8"}), 426),
    ("two versions", dict(extra=[("Sec-WebSocket-Version", "13")]), 426),
    ("bad subprotocol list", dict(extra=[("Sec-WebSocket-Protocol", "a b")]), 400),
    ("two Origins", dict(extra=[("Origin", "http://example.com:8000"), ("Origin", "http://example.com:8000")]), 400),
]


@pytest.mark.parametrize("name, kwargs, status", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_server_rejects(name: str, kwargs: dict[str, object], status: int) -> None:
    if kwargs.get("http_version") == "1.0":
        request = h11.Request(method="GET", target="/", http_version="1.0",
                              headers=[("Host", "example.com:8000"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                       ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")])
    else:
        request = upgrade_request(**kwargs)  # type: ignore[arg-type]
    result = server_handshake(request)
    assert isinstance(result, HandshakeRejected)
    assert result.response.status_code == status
    assert result.error.status == status
    assert result.body.decode().strip() == str(result.error)
    assert header(result.response, b"content-length") == [str(len(result.body)).encode()]
    if status == 426:
        assert header(result.response, b"sec-websocket-version") == [b"13"]
    if status == 405:
        assert header(result.response, b"allow") == [b"GET"]


def test_rejection_is_serializable_by_h11() -> None:
    result = server_handshake(upgrade_request(method="POST"))
    assert isinstance(result, HandshakeRejected)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    conn.next_event()
    wire = conn.send(result.response) + conn.send(h11.Data(data=result.body)) + conn.send(h11.EndOfMessage())
    assert wire.startswith(b"HTTP/1.1 405 ")


# ---------------------------------------------------------------------------- origin

ORIGIN_CASES = [
    # (policy, origin, host, allowed)
    (None, None, "example.com", True),
    (None, "http://example.com", "example.com", True),
    (None, "http://example.com", "example.com:80", True),
    (None, "https://example.com", "example.com:443", True),
    (None, "https://example.com", "example.com:80", False),
    (None, "http://EXAMPLE.com:8000", "example.com:8000", True),
    (None, "http://example.com:8001", "example.com:8000", False),
    (None, "http://evil.com", "example.com", False),
    (None, "null", "example.com", False),
    (None, "http://[::1]:8000", "[::1]:8000", True),
    ("*", "http://evil.com", "example.com", True),
    (["https://app.example.com"], "https://app.example.com", "api.example.com", True),
    (["https://app.example.com"], "https://APP.example.com/", "api.example.com", True),
    (["https://app.example.com"], "https://evil.com", "api.example.com", False),
    (["https://app.example.com", "*"], "https://evil.com", "api.example.com", True),
    ("https://app.example.com", "https://app.example.com", "x", True),
    (lambda origin, request: origin is not None and origin.endswith(".trusted"), "http://a.trusted", "x", True),
    (lambda origin, request: origin is not None, None, "x", False),  # callables may refuse missing Origin
]


@pytest.mark.parametrize("policy, origin, host, allowed", ORIGIN_CASES)
def test_origin_policy(policy: object, origin: Optional[str], host: str, allowed: bool) -> None:
    extra = [] if origin is None else [("Origin", origin)]
    result = server_handshake(upgrade_request(replace={"Host": host}, extra=extra), origins=policy)  # type: ignore[arg-type]
    if allowed:
        assert isinstance(result, HandshakeAccepted)
    else:
        assert isinstance(result, HandshakeRejected) and result.response.status_code == 403


def test_is_same_origin_rejects_userinfo_and_odd_schemes() -> None:
    assert not is_same_origin("http://user@example.com", "example.com")
    assert not is_same_origin("file://example.com", "example.com")
    assert is_same_origin("ws://example.com", "example.com:80")


# ---------------------------------------------------------------------------- subprotocols

SUBPROTOCOL_CASES = [
    ("chat, superchat", ["superchat", "chat"], "superchat"),  # server preference wins
    ("chat, superchat", ["chat"], "chat"),
    ("chat", ["other"], None),
    (None, ["chat"], None),
    ("a,b", lambda offered: offered[-1], "b"),
    ("a,b", lambda offered: None, None),
]


@pytest.mark.parametrize("offered, policy, chosen", SUBPROTOCOL_CASES)
def test_subprotocol_selection(offered: Optional[str], policy: object, chosen: Optional[str]) -> None:
    extra = [] if offered is None else [("Sec-WebSocket-Protocol", offered)]
    result = server_handshake(upgrade_request(extra=extra), subprotocols=policy)  # type: ignore[arg-type]
    assert isinstance(result, HandshakeAccepted)
    assert result.subprotocol == chosen
    assert result.connection.subprotocol == chosen
    assert header(result.response, b"sec-websocket-protocol") == ([] if chosen is None else [chosen.encode()])


def test_subprotocol_selector_returning_unoffered_value_is_500() -> None:
    result = server_handshake(upgrade_request(extra=[("Sec-WebSocket-Protocol", "a")]), subprotocols=lambda offered: "z")
    assert isinstance(result, HandshakeRejected) and result.response.status_code == 500


# ---------------------------------------------------------------------------- extensions


class ServerFactory:
    def __init__(self, name: str = "x-counting", accept: bool = True, rsv_mask: int = 0x4) -> None:
        self.name = name
        self.accept = accept
        self.rsv_mask = rsv_mask
        self.seen: list[list[ExtensionParams]] = []

    def negotiate(self, offers: list[ExtensionParams]) -> Optional[tuple[str, CountingExtension]]:
        self.seen.append(offers)
        for params in offers:
            if params == [("bad", None)]:
                raise HandshakeError("bad parameter")
        if not self.accept:
            return None
        return self.name + "; ok", CountingExtension(name=self.name, rsv_mask=self.rsv_mask)


class ClientFactory:
    def __init__(self, name: str = "x-counting", offer_text: str | None = None) -> None:
        self.name = name
        self.offer_text = offer_text or name
        self.accepted: list[ExtensionParams] = []

    def offer(self) -> str:
        return self.offer_text

    def accept(self, params: ExtensionParams) -> CountingExtension:
        self.accepted.append(params)
        if params != [("ok", None)]:
            raise HandshakeError("unexpected parameters")
        return CountingExtension(name=self.name)


def test_server_extension_negotiation_sees_all_offers_in_order() -> None:
    factory = ServerFactory()
    request = upgrade_request(extra=[("Sec-WebSocket-Extensions", "x-counting; a=1, other, x-counting; b"), ("Sec-WebSocket-Extensions", "x-counting")])
    result = server_handshake(request, extensions=[factory])
    assert isinstance(result, HandshakeAccepted)
    assert factory.seen == [[[("a", "1")], [("b", None)], []]]
    assert header(result.response, b"sec-websocket-extensions") == [b"x-counting; ok"]
    assert [e.name for e in result.connection.extensions] == ["x-counting"]


def test_server_extension_declined_or_not_offered() -> None:
    declining = ServerFactory(accept=False)
    unoffered = ServerFactory(name="x-other")
    result = server_handshake(upgrade_request(extra=[("Sec-WebSocket-Extensions", "x-counting")]), extensions=[declining, unoffered])
    assert isinstance(result, HandshakeAccepted)
    assert result.extensions == [] and unoffered.seen == []
    assert header(result.response, b"sec-websocket-extensions") == []


def test_server_extension_conflicting_rsv_keeps_first() -> None:
    first, second = ServerFactory("x-a"), ServerFactory("x-b")
    result = server_handshake(upgrade_request(extra=[("Sec-WebSocket-Extensions", "x-a, x-b")]), extensions=[first, second])
    assert isinstance(result, HandshakeAccepted)
    assert [e.name for e in result.extensions] == ["x-a"]


@pytest.mark.parametrize("value", ["x-counting; bad", "x-counting; =", 'x-counting; a="unterminated'])
def test_server_malformed_extension_offer_is_400(value: str) -> None:
    result = server_handshake(upgrade_request(extra=[("Sec-WebSocket-Extensions", value)]), extensions=[ServerFactory()])
    assert isinstance(result, HandshakeRejected) and result.response.status_code == 400


def test_server_ignores_extension_header_without_factories() -> None:
    result = server_handshake(upgrade_request(extra=[("Sec-WebSocket-Extensions", "garbage ;;;")]))
    assert isinstance(result, HandshakeAccepted)


# ---------------------------------------------------------------------------- client


def test_client_request_headers() -> None:
    hs = ClientHandshake("example.com:8000", "/chat?room=1", subprotocols=["a", "b"], extensions=[ClientFactory(offer_text="x-counting; p")],
                         origin="http://example.com:8000", extra_headers=[("Authorization", "Bearer t")])
    request = hs.request
    assert request.method == b"GET" and request.target == b"/chat?room=1"
    assert header(request, b"host") == [b"example.com:8000"]  # type: ignore[arg-type]
    assert header(request, b"sec-websocket-version") == [b"13"]  # type: ignore[arg-type]
    assert header(request, b"sec-websocket-protocol") == [b"a, b"]  # type: ignore[arg-type]
    assert header(request, b"sec-websocket-extensions") == [b"x-counting; p"]  # type: ignore[arg-type]
    assert header(request, b"origin") == [b"http://example.com:8000"]  # type: ignore[arg-type]
    assert header(request, b"authorization") == [b"Bearer t"]  # type: ignore[arg-type]
    assert len(base64.b64decode(hs.key)) == 16
    assert ClientHandshake("h").key != ClientHandshake("h").key
    with pytest.raises(ValueError):
        ClientHandshake("h", subprotocols=["not a token"]).request


def test_client_and_server_handshake_end_to_end() -> None:
    client_factory = ClientFactory()
    hs = ClientHandshake("example.com", subprotocols=["v2", "v1"], extensions=[client_factory], origin="http://example.com")
    result = server_handshake(hs.request, subprotocols=["v1", "v2"], extensions=[ServerFactory()])
    assert isinstance(result, HandshakeAccepted)
    accepted = hs.receive_response(result.response)
    assert accepted.subprotocol == "v1"
    assert accepted.connection.role is Role.CLIENT
    assert [e.name for e in accepted.extensions] == ["x-counting"]
    assert client_factory.accepted == [[("ok", None)]]
    # The negotiated extension is active on both ends.
    accepted.connection.send_text("through the extension")
    result.connection.receive_data(accepted.connection.data_to_send())
    assert result.connection.events() == [TextMessage("through the extension")]


def _response(status: int = 101, **headers: str) -> h11.InformationalResponse | h11.Response:
    base = {"Upgrade": "websocket", "Connection": "Upgrade"}
    base.update(headers)
    items = [(k.replace("_", "-"), v) for k, v in base.items()]
    if status == 101:
        return h11.InformationalResponse(status_code=101, headers=items)
    return h11.Response(status_code=status, headers=items)


def test_client_rejects_bad_responses() -> None:
    hs = ClientHandshake("example.com", subprotocols=["a"], extensions=[ClientFactory()])
    good = compute_accept(hs.key)
    cases: list[tuple[h11.InformationalResponse | h11.Response, str]] = [
        (_response(403), "403"),
        (_response(Sec_WebSocket_Accept="wrong"), "Accept"),
        (_response(), "Accept"),
        (_response(Upgrade="h2c", Sec_WebSocket_Accept=good), "Upgrade"),
        (_response(Connection="close", Sec_WebSocket_Accept=good), "Connection"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Protocol="b"), "did not offer"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Protocol="a, a"), "several"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Extensions="x-other"), "did not offer"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Extensions="x-counting; ok, x-counting; ok"), "twice"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Extensions="x-counting; nope"), "unexpected parameters"),
        (_response(Sec_WebSocket_Accept=good, Sec_WebSocket_Extensions="x-counting;"), "malformed"),
    ]
    for response, message in cases:
        with pytest.raises(HandshakeError) as info:
            hs.receive_response(response)
        assert message in str(info.value), (response, str(info.value))
    with pytest.raises(HandshakeError) as info:
        hs.receive_response(_response(403))
    assert info.value.status == 403


def test_client_accepts_minimal_response() -> None:
    hs = ClientHandshake("example.com", subprotocols=["a"])
    result = hs.receive_response(_response(Sec_WebSocket_Accept=compute_accept(hs.key)))
    assert result.subprotocol is None and result.extensions == []


def test_handshake_over_h11_wire_with_trailing_frames() -> None:
    hs = ClientHandshake("localhost:9000")
    client_http = h11.Connection(h11.CLIENT)
    server_http = h11.Connection(h11.SERVER)
    server_http.receive_data(client_http.send(hs.request))
    request = server_http.next_event()
    assert isinstance(request, h11.Request)
    result = server_handshake(request)
    assert isinstance(result, HandshakeAccepted)
    result.connection.send_text("first")  # sent right after the 101, in the same write
    wire = server_http.send(result.response) + result.connection.data_to_send()
    assert server_http.our_state is h11.SWITCHED_PROTOCOL
    client_http.receive_data(wire)
    response = client_http.next_event()
    assert isinstance(response, h11.InformationalResponse)
    conn = hs.receive_response(response).connection
    trailing, _closed = client_http.trailing_data
    conn.receive_data(trailing)
    assert conn.events() == [TextMessage("first")]


# ---------------------------------------------------------------------------- HTTP head limits


def _head(target_len: int = 1, headers: int = 1, header_len: int = 10) -> bytes:
    lines = [b"GET /" + b"a" * (target_len - 1) + b" HTTP/1.1"]
    lines += [b"X-H%d: " % i + b"v" * header_len for i in range(headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _guard_status(data: bytes, chunk: int = 0, **limits: int) -> Optional[int]:
    guard = RequestHeadGuard(**limits)
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    try:
        for piece in pieces:
            guard.feed(piece)
    except HandshakeError as exc:
        return exc.status
    assert guard.head_complete
    return None


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_head_guard_limits(chunk: int) -> None:
    line_overhead = len(b"GET / HTTP/1.1") - 1
    assert _guard_status(_head(target_len=8192 - line_overhead), chunk) is None
    assert _guard_status(_head(target_len=8193 - line_overhead), chunk) == 414
    assert _guard_status(_head(headers=128), chunk) is None
    assert _guard_status(_head(headers=129), chunk) == 431
    assert _guard_status(_head(headers=1, header_len=16000), chunk) is None
    assert _guard_status(_head(headers=2, header_len=8200), chunk) == 431


def test_head_guard_detects_endless_request_line_without_newline() -> None:
    guard = RequestHeadGuard()
    with pytest.raises(HandshakeError) as info:
        guard.feed(b"GET /" + b"a" * 9000)
    assert info.value.status == 414


def test_head_guard_ignores_body_and_resets() -> None:
    guard = RequestHeadGuard(max_header_count=2)
    guard.feed(_head(headers=2) + b"\n" * 100 + b"x" * 100000)
    assert guard.head_complete
    guard.reset()
    with pytest.raises(HandshakeError):
        guard.feed(_head(headers=3))


def test_head_guard_tolerates_leading_blank_lines() -> None:
    guard = RequestHeadGuard()
    guard.feed(b"\r\n\r\n" + _head())
    assert guard.head_complete


@pytest.mark.parametrize("status, header_name", [(414, None), (431, None), (426, b"sec-websocket-version")])
def test_rejection_response_for_guard_errors(status: int, header_name: Optional[bytes]) -> None:
    response, body = rejection_response(HandshakeError("too big", status))
    assert response.status_code == status
    assert body == b"too big\n"
    assert header(response, b"connection") == [b"close"]
    if header_name:
        assert header(response, header_name) == [b"13"]
