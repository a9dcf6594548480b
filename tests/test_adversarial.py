"""Every decoder of untrusted input runs in linear time (issue #12, point 1).

Each test feeds a worst-case shaped input at the largest size the defaults allow
(WebSocket: a 1 MiB message; Engine.IO / Socket.IO: the 1,000,000-byte ``maxPayload``;
HTTP heads: bounded at 16 KiB by the defaults, so their parsers are also fed 1 MiB with
the limits raised) under a time bound. A linear decoder meets the bound by a wide margin
(benchmarks/adversarial.py prints the actual times per MB); a quadratic one misses it by
hours -- the quadratic Socket.IO depth check fixed here took ~27 s for 64 KiB of the
first shape below, so about two hours for 1 MB.

The decoders are synchronous, CPU-bound code: ``trio.fail_after`` cannot interrupt
them (it only fires at the next checkpoint, after the hours). :func:`time_bound`
interrupts the block with SIGALRM instead, so a regression fails in seconds rather
than hanging the suite.

Outcomes are checked too: a refusal is a :class:`~volleyio.VolleyError` (the close
code / status path), never another exception.
"""

from __future__ import annotations

import base64
import json
import random
import signal
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volleyio import _speedups
from volleyio.engineio.client import EngineIOClient
from volleyio.engineio.packets import EngineIOParseError, PacketType, decode_payload
from volleyio.engineio.server import (
    EngineIOServer,
    HttpRequest,
    HttpResponse,
    MessageReceived,
    ReadBody,
    ServerConfig,
)
from volleyio.errors import HandshakeError, VolleyError
from volleyio.socketio import packets as sio_packets
from volleyio.socketio.packets import Decoder, Packet, SocketIODecodeError
from volleyio.websocket.connection import (
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    Role,
    WebSocketConnection,
)
from volleyio.websocket.deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from volleyio.websocket.events import BinaryMessage, Ping, TextMessage
from volleyio.websocket.extensions import parse_extensions_header
from volleyio.websocket.handshake import (
    HandshakeAccepted,
    RequestHeadGuard,
    is_same_origin,
    server_handshake,
)

#: A linear decoder needs a few seconds at most for ~1 MB on a loaded 2-core machine;
#: a quadratic one needs hours.
BOUND = 60.0
MiB = 1024 * 1024
MAX_PAYLOAD = ServerConfig().max_payload  # 1,000,000: Engine.IO's default maxPayload
KEY = b"\x37\xfa\x21\x3d"

# The Engine.IO and Socket.IO decoders do not use the speedups: one run is enough.
no_speedups = pytest.mark.pure_only


class TimeBoundExceeded(AssertionError):
    pass


@contextmanager
def time_bound(seconds: float = BOUND) -> Iterator[None]:
    """Fail the block if it runs longer than ``seconds`` (interrupting it if need be)."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeBoundExceeded(f"still running after {seconds} s: not linear")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s"


def fill(size: int, prefix: str, unit: str, suffix: str) -> str:
    """``prefix + unit * k + suffix`` with k as large as fits in ``size`` characters."""
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


def test_time_bound_interrupts_a_runaway_loop() -> None:
    with pytest.raises(TimeBoundExceeded):
        with time_bound(0.2):
            while True:
                pass


# ------------------------------------------------------------------------ WebSocket


def masked_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    return _speedups.encode_frame(opcode, payload, fin, rsv, KEY)


def utf8_text(size: int) -> bytes:
    unit = "aé€😀".encode()  # 1-, 2-, 3- and 4-byte sequences
    return unit * (size // len(unit))


def server(**options: Any) -> WebSocketConnection:
    return WebSocketConnection(Role.SERVER, **options)


def test_ws_largest_frame_one_byte_per_read() -> None:
    payload = utf8_text(DEFAULT_MAX_MESSAGE_SIZE)
    wire = masked_frame(1, payload)
    conn = server()
    view = memoryview(wire)
    with time_bound():
        for pos in range(len(wire)):
            conn.receive_data(view[pos : pos + 1])
    assert conn.failure is None
    assert conn.events() == [TextMessage(payload.decode())]


def test_ws_empty_frames_fill_a_megabyte() -> None:
    count = MiB // 6
    wire = masked_frame(2, b"") * count
    conn = server()
    with time_bound():
        conn.receive_data(wire)
        events = conn.events()
    assert conn.failure is None
    assert len(events) == count and events[-1] == BinaryMessage(b"")


def test_ws_pings_fill_a_megabyte() -> None:
    count = MiB // 6
    wire = masked_frame(9, b"") * count
    conn = server()
    with time_bound():
        conn.receive_data(wire)
        events = conn.events()
        out = conn.data_to_send()
    assert conn.failure is None
    assert len(events) == count and events[-1] == Ping(b"")
    assert out == b"\x8a\x00" * count  # one pong per ping, in order


def fragments(payload: bytes, count: int, first_opcode: int, rsv: int = 0) -> bytes:
    step = -(-len(payload) // count)
    parts = [payload[i : i + step] for i in range(0, len(payload), step)]
    return b"".join(
        masked_frame(first_opcode if i == 0 else 0, part, i == len(parts) - 1, rsv if i == 0 else 0)
        for i, part in enumerate(parts)
    )


def test_ws_most_fragments_with_split_utf8() -> None:
    payload = utf8_text(DEFAULT_MAX_MESSAGE_SIZE - DEFAULT_MAX_FRAGMENTS * 8)
    wire = fragments(payload, DEFAULT_MAX_FRAGMENTS, 1)  # 253-byte parts: sequences cut everywhere
    conn = server()
    with time_bound():
        conn.receive_data(wire)
    assert conn.failure is None
    assert conn.events() == [TextMessage(payload.decode())]


def test_ws_invalid_utf8_in_the_last_fragment() -> None:
    payload = utf8_text(DEFAULT_MAX_MESSAGE_SIZE - 4) + b"\xed\xa0\x80"  # a surrogate
    wire = fragments(payload, DEFAULT_MAX_FRAGMENTS, 1)
    conn = server()
    with time_bound():
        conn.receive_data(wire)
    assert conn.failure is not None and conn.failure.code == 1007


def test_ws_deflate_most_fragments() -> None:
    plain = random.Random(12).randbytes(DEFAULT_MAX_MESSAGE_SIZE - 64 * 1024)  # incompressible
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire_payload = (compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire = fragments(wire_payload, DEFAULT_MAX_FRAGMENTS, 2, rsv=4)
    conn = server(extensions=[PerMessageDeflate(is_server=True)])
    with time_bound():
        conn.receive_data(wire)
    assert conn.failure is None
    assert conn.events() == [BinaryMessage(plain)]


def test_ws_deflate_bomb_stops_at_the_limit() -> None:
    # 1 MiB on the wire that would inflate to ~1 GiB: 1009 once the limit is passed.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)  # self-contained
    wire_payload = block * ((MiB - 16) // len(block))
    conn = server(extensions=[PerMessageDeflate(is_server=True)])
    with time_bound():
        conn.receive_data(masked_frame(2, wire_payload, True, 4))
    assert conn.failure is not None and conn.failure.code == 1009


def test_parse_frames_two_byte_frames(sp: Any) -> None:
    data = b"\x82\x00" * (MiB // 2)  # the most frames a megabyte holds (client side)
    with time_bound():
        frames, consumed, error = sp.parse_frames(data, False, MiB, 0, True)
    assert error is None and consumed == len(data) and len(frames) == MiB // 2


def test_utf8_validator_one_byte_feeds(sp: Any) -> None:
    data = utf8_text(MiB)
    validator = sp.Utf8Validator()
    view = memoryview(data)
    with time_bound():
        results = {validator.feed(view[pos : pos + 1]) for pos in range(len(data))}
    assert results == {-1} and validator.complete


# ----------------------------------------------------------------- handshake / HTTP


@no_speedups
@pytest.mark.parametrize(
    "value",
    [
        'permessage-deflate; p="' + "\\a" * (MiB // 2) + '"',  # quoted-pair escapes
        "permessage-deflate" + "; a" * (MiB // 3),  # many parameters
        ", " * (MiB // 2) + "x",  # empty list elements
    ],
    ids=["quoted-pairs", "parameters", "empty-elements"],
)
def test_extensions_header_parser(value: str) -> None:
    with time_bound():
        try:
            parse_extensions_header([value])
        except HandshakeError:
            pass


@no_speedups
def test_deflate_negotiation_declines_many_offers() -> None:
    header = "permessage-deflate; server_max_window_bits=16, " * (MiB // 48) + "x"
    with time_bound():
        offers = [params for name, params in parse_extensions_header([header]) if name == "permessage-deflate"]
        assert ServerPerMessageDeflateFactory().negotiate(offers) is None
    assert len(offers) == MiB // 48


def upgrade_request(**replace: str | bytes) -> h11.Request:
    headers: dict[str, str | bytes] = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **replace,
    }
    return h11.Request(method="GET", target="/", headers=list(headers.items()))


@no_speedups
def test_server_handshake_with_huge_list_headers() -> None:
    origin = "http://" + "a" * (MiB // 4) + ".example.com"
    request = upgrade_request(
        Origin=origin,
        **{
            "Sec-WebSocket-Protocol": "chat, " * (MiB // 24) + "x",
            "Sec-WebSocket-Extensions": "permessage-deflate; a, " * (MiB // 92) + "x",
        },
    )
    with time_bound():
        result = server_handshake(
            request, subprotocols=("other",), origins=(origin.upper(),), extensions=[ServerPerMessageDeflateFactory()]
        )
    assert isinstance(result, HandshakeAccepted) and result.subprotocol is None and not result.extensions


@no_speedups
@pytest.mark.parametrize(
    "headers,status",
    [
        ({"Sec-WebSocket-Key": "QUFB" * (MiB // 4)}, 400),  # valid base64, far too long
        ({"Sec-WebSocket-Key": "QUFB" * (MiB // 4 - 1) + "QU!B"}, 400),  # invalid at the end
        ({"Origin": "http://" + "a" * MiB + ":80"}, 403),  # same-origin check of a long origin
        ({"Upgrade": "x, " * (MiB // 3) + "y"}, 426),
        ({"Sec-WebSocket-Protocol": "a b, " * (MiB // 5) + "x"}, 400),  # not tokens
    ],
    ids=["long-key", "bad-key-at-the-end", "long-origin", "long-upgrade-list", "bad-protocols"],
)
def test_server_handshake_refuses_huge_headers(headers: dict[str, str], status: int) -> None:
    request = upgrade_request(**headers)
    with time_bound():
        result = server_handshake(request)
    assert not isinstance(result, HandshakeAccepted) and result.error.status == status


@no_speedups
def test_same_origin_check_of_a_long_origin() -> None:
    with time_bound():
        assert not is_same_origin("http://" + "a" * MiB + ":80", "a:80")
        assert not is_same_origin("http://[" + "1:" * (MiB // 2), "a:80")
        assert not is_same_origin("http://a:" + "8" * MiB, "a:" + "8" * MiB)


@no_speedups
@pytest.mark.parametrize(
    "origin,host",
    [
        ("http://a:" + "8" * 5000, "a:80"),  # past int()'s 4,300-digit limit: was a ValueError
        ("http://a:80", "a:" + "8" * 5000),
        ("http://[::1]:" + "8" * 5000, "[::1]"),
        ("http://a:\u00b2", "a:2"),  # "²".isdigit() is true, int("²") a ValueError
        ("http://a:080", "a:" + "0" * 10 + "80"),
        ("http://a:65536", "a:65536"),
    ],
)
def test_same_origin_with_impossible_ports(origin: str, host: str) -> None:
    assert not is_same_origin(origin, host)
    result = server_handshake(upgrade_request(Origin=origin.encode("latin-1"), Host=host))  # obs-text: bytes
    assert not isinstance(result, HandshakeAccepted) and result.error.status == 403


@no_speedups
def test_same_origin_with_possible_ports() -> None:
    assert is_same_origin("http://a:080", "a:80")
    assert is_same_origin("http://a:65535", "A:65535")
    assert is_same_origin("https://[::1]:443", "[::1]")


def request_head(size: int) -> bytes:
    lines = [b"GET / HTTP/1.1", b"Host: example.com"]
    filler = b"X-Filler: " + b"a " * 60 + b"a"  # 127 fields of these fit in 16 KiB
    lines += [filler] * ((size - 40) // (len(filler) + 2))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@no_speedups
def test_head_guard_one_byte_per_read() -> None:
    head = request_head(MiB)
    guard = RequestHeadGuard(max_request_line=MiB, max_header_block=MiB, max_header_count=MiB)
    view = memoryview(head)
    with time_bound():
        for pos in range(len(head)):
            guard.feed(view[pos : pos + 1])
    assert guard.head_complete


@no_speedups
def test_head_guard_and_h11_at_the_default_limits_one_byte_per_read() -> None:
    # The largest head the defaults let through, byte by byte (what the I/O layer does
    # with a peer that sends one byte per segment), then a megabyte that must be refused.
    head = request_head(15 * 1024)
    guard = RequestHeadGuard()
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    event: Any = h11.NEED_DATA
    with time_bound():
        for pos in range(len(head)):
            byte = head[pos : pos + 1]
            guard.feed(byte)
            conn.receive_data(byte)
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                break
    assert isinstance(event, h11.Request) and guard.head_complete
    guard = RequestHeadGuard()
    with time_bound(), pytest.raises(HandshakeError) as caught:
        guard.feed(request_head(MiB))
    assert caught.value.status == 431


@no_speedups
@pytest.mark.parametrize("query", ["a=1&" * (MiB // 4), "%41=%42&" * (MiB // 8)], ids=["plain", "escaped"])
def test_query_string_parser(query: str) -> None:
    from volleyio.trio._engineio_server import _parse_query

    with time_bound():
        parsed = _parse_query(query)
    assert parsed == ({"a": "1"} if query.startswith("a") else {"A": "B"})


# -------------------------------------------------------------------------- Engine.IO


@no_speedups
def test_eio_payload_of_tiny_packets() -> None:
    body = "\x1e".join(["4x"] * (MAX_PAYLOAD // 3)).encode()
    with time_bound():
        packets = decode_payload(body)
    assert len(packets) == MAX_PAYLOAD // 3 and packets[-1].data == "x"


@no_speedups
def test_eio_payload_base64() -> None:
    data = random.Random(3).randbytes((MAX_PAYLOAD - 1) // 4 * 3)
    with time_bound():
        packets = decode_payload(b"b" + base64.b64encode(data))
    assert [p.data for p in packets] == [data]


@no_speedups
@pytest.mark.parametrize(
    "body",
    [b"b" + b"A" * (MAX_PAYLOAD - 6) + b"AAA!=", b"4" + "é".encode() * (MAX_PAYLOAD // 2 - 2) + b"\xc3("],
    ids=["bad-base64-at-the-end", "bad-utf8-at-the-end"],
)
def test_eio_payload_refused_at_the_end(body: bytes) -> None:
    with time_bound(), pytest.raises(EngineIOParseError):
        decode_payload(body)


@no_speedups
def test_eio_server_core_post_of_tiny_packets() -> None:
    server = EngineIOServer(ServerConfig())
    response = server.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling"}), 0.0)
    assert isinstance(response, HttpResponse)
    sid = json.loads(response.body[1:])["sid"]
    query = {"EIO": "4", "transport": "polling", "sid": sid}
    outcome = server.handle_request(HttpRequest("POST", "/engine.io/", query, {"content-type": "text/plain"}), 0.0)
    assert isinstance(outcome, ReadBody)
    body = "\x1e".join(["4x"] * (MAX_PAYLOAD // 3)).encode()
    with time_bound():
        response = server.post_body(sid, body, 0.0)
        events = server.take_events()
    assert response.status == 200
    assert sum(isinstance(e, MessageReceived) for e in events) == MAX_PAYLOAD // 3


@no_speedups
@pytest.mark.parametrize(
    "headers,status",
    [
        ({"origin": "http://" + "a" * MiB, "host": "a" * MiB}, 200),  # same origin
        ({"origin": "http://" + "a" * MiB, "host": "b" * MiB}, 403),
        ({"origin": "http://" + "[" * MiB, "host": "[" * MiB + ":80"}, 403),
        ({"origin": "http://a\x00" + "a" * MiB, "host": "a"}, 400),
        ({"origin": "http://a:" + "8" * MiB, "host": "a:" + "8" * MiB}, 403),
    ],
    ids=["same-long-host", "other-long-host", "brackets", "bad-char-at-the-start", "long-ports"],
)
def test_eio_handshake_origin_check_of_megabyte_headers(headers: dict[str, str], status: int) -> None:
    server = EngineIOServer(ServerConfig())
    request = HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling"}, headers)
    with time_bound():
        response = server.handle_request(request, 0.0)
    assert isinstance(response, HttpResponse) and response.status == status


@no_speedups
@pytest.mark.parametrize("nesting", [1, 100_000], ids=["flat", "deep"])
def test_eio_client_open_packet_of_a_megabyte(nesting: int) -> None:
    client = EngineIOClient()
    client.handshake_request()
    body = ("0" + "[" * nesting + "1" * (MAX_PAYLOAD - 2 * nesting) + "]" * nesting).encode()
    with time_bound():
        client.poll_response(200, body, 0.0)
    assert client.closed  # an invalid open packet: "parse error", not a traceback


# -------------------------------------------------------------------------- Socket.IO


SIO_SHAPES = {
    # The reproducer: every escaped quote started a rescan to the end.
    "unterminated-escapes+1001[": fill(MAX_PAYLOAD - 1001, '2"', '\\"', "") + "[" * 1001,
    "1001[+unterminated-escapes": "2" + "[" * 1001 + fill(MAX_PAYLOAD - 1002, '"', '\\"', ""),
    "escaped-quotes-in-a-string": fill(MAX_PAYLOAD, '2["a","', '\\"', '"]'),
    "backslashes-then-quotes": fill(MAX_PAYLOAD, '2["a","', '\\\\\\"', '"]'),
    "brackets-inside-a-string": fill(MAX_PAYLOAD, '2["a","', "[{", '"]'),
    "brackets-inside-many-strings": fill(MAX_PAYLOAD, '2["a"', ',"[{"', "]"),
    "deep-nesting": "2" + "[" * (MAX_PAYLOAD - 1),
    "deep-nesting-after-strings": fill(MAX_PAYLOAD // 2, '2["a"', ',"x"', "") + "," + "[" * (MAX_PAYLOAD // 2),
    "nesting-at-the-cap-wide": "2" + "[" * 999 + fill(MAX_PAYLOAD - 2000, "", "1,", "1") + "]" * 999,
    "empty-arrays": fill(MAX_PAYLOAD, '2["a"', ",[]", "]"),
    "1000-digit-integers": fill(MAX_PAYLOAD, '2["a"', "," + "9" * 1000, "]"),
    "integer-past-the-cap": fill(MAX_PAYLOAD, '2["a",', "1", "]"),
    "one-long-float": fill(MAX_PAYLOAD, '2["a",0.', "1", "]"),
    "huge-exponent": fill(MAX_PAYLOAD, '2["a",1e', "9", "]"),
    "unicode-escapes": fill(MAX_PAYLOAD, '2["a","', "\\ud83d\\ude00", '"]'),
    "small-objects": fill(MAX_PAYLOAD, '2["a"', ',{"k":[1,2,{"x":null}]}', "]"),
    "long-namespace": fill(MAX_PAYLOAD, "2/", "n", ',["a"]'),
    "unterminated-string": fill(MAX_PAYLOAD, '2["a","', "x", ""),
    "quotes": fill(MAX_PAYLOAD, "2[", '"', ""),
    "long-ack-id": fill(MAX_PAYLOAD, "2", "1", '["a"]'),
    "attachment-count": fill(MAX_PAYLOAD, "5", "1", '-["a"]'),
}


@no_speedups
@pytest.mark.parametrize("text", list(SIO_SHAPES.values()), ids=list(SIO_SHAPES))
def test_sio_decoder(text: str) -> None:
    assert len(text) <= MAX_PAYLOAD
    with time_bound():
        try:
            Decoder().receive(text)
        except SocketIODecodeError:
            pass


@no_speedups
def test_sio_placeholders() -> None:
    header = fill(MAX_PAYLOAD, '51-["a"', ',{"_placeholder":true,"num":0}', "]")
    decoder = Decoder()
    with time_bound():
        assert decoder.receive(header) is None
        packet = decoder.receive(b"x")
    assert isinstance(packet, Packet) and packet.data[1:] == [b"x"] * (len(packet.data) - 1)


@no_speedups
def test_sio_largest_attachment() -> None:
    decoder = Decoder()
    data = bytes(MAX_PAYLOAD)
    with time_bound():
        decoder.receive('51-["a",{"_placeholder":true,"num":0}]')
        packet = decoder.receive(data)
    assert packet is not None and packet.data == ["a", data]


# -------------------------------------------------------------- Socket.IO JSON rules


def decode(text: str, **options: Any) -> Any:
    packet = Decoder(**options).receive("3" + text)  # an ACK: any array is valid
    assert packet is not None
    return packet.data


@no_speedups
def test_sio_depth_cap_is_exact() -> None:
    cap = sio_packets.DEFAULT_MAX_DEPTH
    assert decode("[" * cap + '"a"' + "]" * cap) is not None
    with pytest.raises(SocketIODecodeError, match="nested too deeply"):
        decode("[" * (cap + 1) + '"a"' + "]" * (cap + 1))
    # Brackets inside strings, escaped quotes and backslashes do not count.
    inert = '"[{\\"[{\\\\",' * (cap + 1)
    assert decode("[" * cap + inert + '"a"' + "]" * cap) is not None
    with pytest.raises(SocketIODecodeError, match="nested too deeply"):
        decode('["a",' + inert + "[" * cap + "]" * cap + "]")


@no_speedups
def test_sio_numbers() -> None:
    digits = sio_packets.DEFAULT_MAX_INTEGER_DIGITS
    assert decode(f'["a",{"9" * digits},-{"9" * digits}]') == ["a", int("9" * digits), -int("9" * digits)]
    for text in (f'["a",{"1" * (digits + 1)}]', f'["a",-{"1" * (digits + 1)}]', '["a",' + "1" * MiB + "]"):
        with pytest.raises(SocketIODecodeError, match="integer too long"):
            decode(text)
    # A long fraction is a float (float() is linear); out of double range is refused.
    assert decode('["a",0.' + "3" * MiB + "]") == ["a", 1 / 3]
    assert decode('["a",' + "1" * 300 + ".0]") == ["a", float("1" * 300)]
    for text in ('["a",1e999]', '["a",-1e999]', '["a",' + "1" * 400 + ".0e400]", '["a",1e' + "9" * MiB + "]"):
        with pytest.raises(SocketIODecodeError, match="number out of range"):
            decode(text)
    for text in ('["a",NaN]', '["a",Infinity]', '["a",-Infinity]'):
        with pytest.raises(SocketIODecodeError, match="not valid JSON"):
            decode(text)


def depth_of(value: Any) -> int:
    """Nesting depth of decoded JSON (iterative: values may be 1,000 deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in (item if isinstance(item, list) else item.values()))
    return deepest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{}\n\u00e9'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k"\\[{'), inner, max_size=3),
    max_leaves=30,
)


@no_speedups
@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=8), st.booleans())
def test_prop_depth_check_is_exact_on_valid_json(value: Any, max_depth: int, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert sio_packets._text_depth_exceeds(text, max_depth) == (depth_of(value) > max_depth)


@no_speedups
@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='[]{}"\\,:1a ', max_size=60), st.integers(min_value=0, max_value=6))
def test_prop_any_text_decodes_or_is_refused(text: str, max_depth: int) -> None:
    # Invalid JSON of any shape: a packet or SocketIODecodeError, nothing else; and a
    # decoded value never nests past the cap.
    try:
        packet = Decoder(max_depth=max_depth).receive("3" + text)
    except SocketIODecodeError:
        return
    assert packet is not None and depth_of(packet.data) <= max_depth


@no_speedups
def test_sio_depth_cap_holds_with_little_stack_left() -> None:
    # The cap, not the interpreter's recursion limit, decides (the decoder makes room
    # for exactly max_depth levels whatever the caller's stack depth).
    cap = sio_packets.DEFAULT_MAX_DEPTH
    text = "[" * cap + "1" + "]" * cap

    def nest(levels: int) -> Any:
        return nest(levels - 1) if levels else decode(text)

    frame, used = sys._getframe(), 0
    while frame is not None:
        frame, used = frame.f_back, used + 1
    assert depth_of(nest(sys.getrecursionlimit() - used - 30)) == cap


@no_speedups
def test_eio_payload_packet_types_survive() -> None:
    # Guard against a linear rewrite that changes results: mixed payload round-trip.
    packets = decode_payload("4hi\x1ebAQID\x1e2\x1e6".encode())
    assert [(p.type, p.data) for p in packets] == [
        (PacketType.MESSAGE, "hi"),
        (PacketType.MESSAGE, b"\x01\x02\x03"),
        (PacketType.PING, ""),
        (PacketType.NOOP, ""),
    ]


@no_speedups
@pytest.mark.parametrize("raw", ["[" * MiB, "1" * MiB, '{"type":"chat","text":"' + "\\u00e9" * (MiB // 6) + '"'])
def test_demo_chat_json(raw: str) -> None:
    from volleyio.demo.server import _parse_ws_chat

    with time_bound():
        assert _parse_ws_chat(raw) == "not JSON"  # not a RecursionError / traceback


def test_refusals_are_volley_errors() -> None:
    assert issubclass(SocketIODecodeError, VolleyError)
    assert issubclass(EngineIOParseError, VolleyError)
    assert issubclass(HandshakeError, VolleyError)
