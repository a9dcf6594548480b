"""WebSocketConnection: one test per RFC 6455 rule, limit and state transition."""

from __future__ import annotations

import pytest

from test_websocket_helpers import (
    CountingExtension,
    client,
    close_payload,
    closed_event,
    raw_frame,
    sent_close_code,
    server,
    unmask_frames,
)
from volleyio import _speedups
from volleyio.errors import ConnectionClosedError, ProtocolError
from volleyio.websocket import (
    PART_OVERHEAD,
    BinaryMessage,
    CloseInfo,
    CloseReceived,
    ConnectionClosed,
    ConnectionState,
    MessageChunk,
    Ping,
    Pong,
    Role,
    TextMessage,
    WebSocketConnection,
    encode_message_frames,
    is_valid_close_code,
)

# --------------------------------------------------------------------------- basics


def test_role_accepts_strings() -> None:
    assert WebSocketConnection("server").role is Role.SERVER
    assert WebSocketConnection("client").role is Role.CLIENT
    with pytest.raises(ValueError):
        WebSocketConnection("peer")


def test_unfragmented_text_and_binary() -> None:
    conn = server()
    conn.receive_data(raw_frame(1, "héllo".encode()) + raw_frame(2, b"\x00\xff"))
    assert conn.events() == [TextMessage("héllo"), BinaryMessage(b"\x00\xff")]
    assert conn.state is ConnectionState.OPEN
    assert conn.data_to_send() == b""


def test_byte_at_a_time_delivery() -> None:
    conn = server()
    data = raw_frame(1, b"a" * 300, fin=False) + raw_frame(9, b"ping") + raw_frame(0, b"b" * 70000)
    events = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        events.extend(conn.events())
    assert events == [Ping(b"ping"), TextMessage("a" * 300 + "b" * 70000)]


def test_next_event_and_events_interleave() -> None:
    conn = server()
    conn.receive_data(raw_frame(1, b"a") + raw_frame(1, b"b") + raw_frame(1, b"c"))
    assert conn.next_event() == TextMessage("a")
    assert conn.events() == [TextMessage("b"), TextMessage("c")]
    assert conn.next_event() is None
    conn.receive_data(raw_frame(2, b"d"))
    assert conn.next_event() == BinaryMessage(b"d")
    assert conn.next_event() is None


def test_server_frames_unmasked_client_frames_masked_with_fresh_keys() -> None:
    srv, cli = server(), client()
    srv.send_text("hi")
    assert srv.data_to_send() == bytes.fromhex("81026869")
    cli.send_text("hi")
    cli.send_text("hi")
    data = cli.data_to_send()
    assert data[1] & 0x80 and data[8 + 1] & 0x80
    assert data[2:6] != data[10:14]  # a fresh key per frame (2**-32 chance of a false failure)
    assert unmask_frames(data) == [(1, True, 0, b"hi"), (1, True, 0, b"hi")]


def test_data_to_send_coalesces_everything() -> None:
    srv = server()
    srv.send_text("a")
    srv.send_binary(b"b")
    srv.send_ping(b"c")
    srv.send_pong(b"d")
    data = srv.data_to_send()
    assert isinstance(data, bytes)
    assert unmask_frames(data) == [(1, True, 0, b"a"), (2, True, 0, b"b"), (9, True, 0, b"c"), (10, True, 0, b"d")]
    assert srv.data_to_send() == b""


@pytest.mark.parametrize("size, fragment_size, expected_frames", [(10, 3, 4), (9, 3, 3), (3, 3, 1), (0, 3, 1), (5, None, 1)])
def test_send_binary_fragmentation(size: int, fragment_size: int | None, expected_frames: int) -> None:
    payload = bytes(range(size))
    cli = client()
    cli.send_binary(payload, fragment_size=fragment_size)
    frames = unmask_frames(cli.data_to_send())
    assert len(frames) == expected_frames
    assert frames[0][0] == 2 and all(f[0] == 0 for f in frames[1:])
    assert [f[1] for f in frames] == [False] * (expected_frames - 1) + [True]
    assert b"".join(f[3] for f in frames) == payload


def test_send_text_fragmentation_round_trips_split_characters() -> None:
    cli, srv = client(), server()
    cli.send_text("€uro€", fragment_size=2)  # splits multi-byte characters across frames
    srv.receive_data(cli.data_to_send())
    assert srv.events() == [TextMessage("€uro€")]


def test_encode_message_frames_once_for_many_connections() -> None:
    frames = encode_message_frames(1, "broadcast".encode(), fragment_size=4)
    receivers = [client() for _ in range(3)]
    for conn in receivers:
        conn.receive_data(frames)
        assert conn.events() == [TextMessage("broadcast")]
    with pytest.raises(ValueError):
        encode_message_frames(8, b"")
    masked = encode_message_frames(2, b"abc", mask=True)
    srv = server()
    srv.receive_data(masked)
    assert srv.events() == [BinaryMessage(b"abc")]


def test_send_raw_frames_queues_bytes_and_respects_closing() -> None:
    srv = server()
    frames = encode_message_frames(2, b"x")
    srv.send_raw_frames(frames)
    assert srv.data_to_send() == frames
    srv.close()
    with pytest.raises(ConnectionClosedError):
        srv.send_raw_frames(frames)


def test_control_payload_over_125_refused_locally() -> None:
    with pytest.raises(ValueError):
        server().send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        server().send_pong(b"x" * 126)


# --------------------------------------------------------------------------- ping / pong


def test_ping_is_answered_with_same_payload() -> None:
    srv = server()
    srv.receive_data(raw_frame(9, b"are you there"))
    assert srv.events() == [Ping(b"are you there")]
    assert srv.data_to_send() == raw_frame(10, b"are you there", mask=False)


def test_auto_pong_can_be_disabled() -> None:
    srv = server(auto_pong=False)
    srv.receive_data(raw_frame(9, b"x"))
    assert srv.events() == [Ping(b"x")]
    assert srv.data_to_send() == b""


def test_pong_event() -> None:
    cli = client()
    cli.receive_data(raw_frame(10, b"late", mask=False))
    assert cli.events() == [Pong(b"late")]


def test_control_frames_interleaved_in_fragmented_message() -> None:
    srv = server()
    srv.receive_data(
        raw_frame(2, b"ab", fin=False) + raw_frame(9, b"1") + raw_frame(0, b"cd", fin=False) + raw_frame(10, b"2") + raw_frame(0, b"ef")
    )
    assert srv.events() == [Ping(b"1"), Pong(b"2"), BinaryMessage(b"abcdef")]


def test_no_pong_after_close_sent() -> None:
    srv = server()
    srv.close()
    srv.data_to_send()
    srv.receive_data(raw_frame(9, b"x"))
    assert srv.events() == [Ping(b"x")]
    assert srv.data_to_send() == b""


# --------------------------------------------------------------------------- framing violations


def _fail_case(data: bytes, *, role: str = "server", **options: object) -> WebSocketConnection:
    conn = server(**options) if role == "server" else client(**options)
    conn.receive_data(data)
    return conn


FRAMING_VIOLATIONS = [
    ("continuation without start", raw_frame(0, b"x"), 1002),
    ("text while fragmented message open", raw_frame(1, b"a", fin=False) + raw_frame(1, b"b"), 1002),
    ("binary while fragmented message open", raw_frame(2, b"a", fin=False) + raw_frame(2, b"b"), 1002),
    ("reserved opcode 3", raw_frame(3, b""), 1002),
    ("reserved control opcode 0xB", raw_frame(0xB, b""), 1002),
    ("fragmented ping", raw_frame(9, b"", fin=False), 1002),
    ("control payload 126", raw_frame(9, b"x" * 126), 1002),
    ("RSV1 without extension", raw_frame(1, b"a", rsv=4), 1002),
    ("RSV2 without extension", raw_frame(2, b"a", rsv=2), 1002),
    ("RSV3 without extension", raw_frame(2, b"a", rsv=1), 1002),
    ("RSV on control frame", raw_frame(9, b"", rsv=4), 1002),
    ("unmasked client frame", raw_frame(1, b"a", mask=False), 1002),
    ("invalid UTF-8 single frame", raw_frame(1, b"\xff"), 1007),
    ("surrogate in text", raw_frame(1, b"\xed\xa0\x80"), 1007),
    ("text ends inside a character", raw_frame(1, b"\xe2\x82", fin=False) + raw_frame(0, b""), 1007),
    ("64-bit length with MSB set", bytes((0x82, 0xFF)) + b"\x80" + b"\0" * 7, 1002),
]


@pytest.mark.parametrize("name, data, code", FRAMING_VIOLATIONS, ids=[c[0] for c in FRAMING_VIOLATIONS])
def test_framing_violation_fails_connection(name: str, data: bytes, code: int) -> None:
    conn = _fail_case(data)
    assert sent_close_code(conn) == code
    assert conn.failure is not None and conn.failure.code == code
    out = unmask_frames(conn.data_to_send())
    assert out[-1][0] == 8 and int.from_bytes(out[-1][3][:2], "big") == code
    # A failing server closes TCP at once (RFC 6455 section 7.1.7).
    assert conn.state is ConnectionState.CLOSED
    assert conn.events()[-1] == ConnectionClosed(1006, "", False)


def test_masked_server_frame_fails_client() -> None:
    conn = _fail_case(raw_frame(1, b"a", mask=True), role="client")
    assert sent_close_code(conn) == 1002
    # A failing client waits for the server to close TCP.
    assert conn.state is ConnectionState.CLOSING
    conn.receive_data(raw_frame(1, b"ignored", mask=False))
    assert conn.events() == []
    conn.receive_data(b"")
    assert conn.events() == [ConnectionClosed(1006, "", False)]
    assert conn.closed


def test_frames_before_a_violation_are_delivered() -> None:
    conn = _fail_case(raw_frame(1, b"ok") + raw_frame(9, b"p") + raw_frame(3, b""))
    events = conn.events()
    assert events[:2] == [TextMessage("ok"), Ping(b"p")]
    frames = unmask_frames(conn.data_to_send())
    assert [f[0] for f in frames] == [10, 8]


def test_invalid_utf8_mid_fragmented_message_closes_before_message_ends() -> None:
    conn = server()
    conn.receive_data(raw_frame(1, b"valid ", fin=False))
    assert conn.state is ConnectionState.OPEN
    conn.receive_data(raw_frame(0, b"still \xc0\xaf", fin=False))  # overlong: fails now
    assert sent_close_code(conn) == 1007
    assert conn.events() == [ConnectionClosed(1006, "", False)]


def test_utf8_split_across_fragments_is_valid() -> None:
    conn = server()
    data = "𝄞".encode()
    conn.receive_data(raw_frame(1, data[:1], fin=False) + raw_frame(0, data[1:3], fin=False) + raw_frame(0, data[3:]))
    assert conn.events() == [TextMessage("𝄞")]


def test_no_data_processed_after_failure() -> None:
    conn = _fail_case(raw_frame(3, b""))
    conn.events()
    conn.receive_data(raw_frame(1, b"late"))
    assert conn.events() == []


def test_failure_reason_fits_close_frame() -> None:
    ext = CountingExtension(fail_with=ProtocolError("é" * 200, 1002))
    conn = server(extensions=[ext])
    conn.receive_data(raw_frame(2, b"x", rsv=4))
    (close,) = unmask_frames(conn.data_to_send())
    assert len(close[3]) <= 125
    close[3][2:].decode("utf-8")  # truncated on a character boundary


# --------------------------------------------------------------------------- limits


def test_max_message_size_single_frame_checked_from_header() -> None:
    conn = server(max_message_size=100)
    conn.receive_data(raw_frame(2, b"x" * 101)[:4])  # only the header arrived
    assert sent_close_code(conn) == 1009


def test_max_message_size_exact_limit_allowed() -> None:
    conn = server(max_message_size=100)
    conn.receive_data(raw_frame(2, b"x" * 60, fin=False) + raw_frame(0, b"y" * 40))
    assert conn.events() == [BinaryMessage(b"x" * 60 + b"y" * 40)]


def test_max_message_size_cumulative_over_fragments() -> None:
    conn = server(max_message_size=100)
    conn.receive_data(raw_frame(2, b"x" * 60, fin=False) + raw_frame(0, b"y" * 41, fin=False))
    assert sent_close_code(conn) == 1009


def test_max_message_size_none_is_unlimited() -> None:
    conn = server(max_message_size=None)
    conn.receive_data(raw_frame(2, b"x" * (2 << 20)))
    assert conn.events() == [BinaryMessage(b"x" * (2 << 20))]


def test_max_fragments() -> None:
    conn = server(max_fragments=3)
    conn.receive_data(raw_frame(2, b"a", fin=False) + raw_frame(0, b"b", fin=False) + raw_frame(0, b"c"))
    assert conn.events() == [BinaryMessage(b"abc")]
    conn.receive_data(raw_frame(2, b"a", fin=False) + raw_frame(0, b"b", fin=False) + raw_frame(0, b"c", fin=False))
    assert conn.state is ConnectionState.OPEN
    conn.receive_data(raw_frame(0, b"d"))
    assert sent_close_code(conn) == 1009


def test_default_max_fragments_is_4096() -> None:
    conn = server()
    conn.receive_data(raw_frame(2, b"", fin=False) + raw_frame(0, b"", fin=False) * 4094 + raw_frame(0, b""))
    assert conn.events() == [BinaryMessage(b"")]
    conn.receive_data(raw_frame(2, b"", fin=False) + raw_frame(0, b"", fin=False) * 4095)
    assert conn.state is ConnectionState.OPEN
    conn.receive_data(raw_frame(0, b"", fin=False))
    assert sent_close_code(conn) == 1009


def test_retained_bytes_count_per_part_overhead() -> None:
    # 100 one-byte parts retain 100 * (1 + PART_OVERHEAD) bytes: over 2 * 3000 once past ~92 parts.
    limit = 3000
    parts_allowed = (2 * limit) // (1 + PART_OVERHEAD)
    conn = server(max_message_size=limit, max_fragments=None)
    conn.receive_data(raw_frame(2, b"x", fin=False) + raw_frame(0, b"x", fin=False) * (parts_allowed - 1))
    assert conn.state is ConnectionState.OPEN
    conn.receive_data(raw_frame(0, b"x", fin=False))
    assert sent_close_code(conn) == 1009


def test_empty_fragments_are_not_retained() -> None:
    conn = server(max_message_size=10, max_fragments=None)
    conn.receive_data(raw_frame(2, b"", fin=False) + raw_frame(0, b"", fin=False) * 500 + raw_frame(0, b"ok"))
    assert conn.events() == [BinaryMessage(b"ok")]


# --------------------------------------------------------------------------- close frames

CLOSE_PAYLOADS = [
    (b"", 1005, "", None),
    (close_payload(1000), 1000, "", None),
    (close_payload(1001, b"going away"), 1001, "going away", None),
    (close_payload(1003), 1003, "", None),
    (close_payload(1007), 1007, "", None),
    (close_payload(1011), 1011, "", None),
    (close_payload(1012), 1012, "", None),
    (close_payload(1014), 1014, "", None),
    (close_payload(3000), 3000, "", None),
    (close_payload(4999, "é".encode()), 4999, "é", None),
    (b"\x03", None, None, 1002),
    (close_payload(999), None, None, 1002),
    (close_payload(1004), None, None, 1002),
    (close_payload(1005), None, None, 1002),
    (close_payload(1006), None, None, 1002),
    (close_payload(1015), None, None, 1002),
    (close_payload(1016), None, None, 1002),
    (close_payload(2999), None, None, 1002),
    (close_payload(5000), None, None, 1002),
    (close_payload(0), None, None, 1002),
    (close_payload(1000, b"\xff"), None, None, 1007),
]


@pytest.mark.parametrize("payload, code, reason, fail_code", CLOSE_PAYLOADS, ids=[repr(c[0][:4]) for c in CLOSE_PAYLOADS])
def test_close_payload_rules(payload: bytes, code: int | None, reason: str | None, fail_code: int | None) -> None:
    conn = server()
    conn.receive_data(raw_frame(8, payload))
    events = conn.events()
    if fail_code is not None:
        assert sent_close_code(conn) == fail_code
        assert not any(isinstance(e, CloseReceived) for e in events)
        return
    assert code is not None and reason is not None
    assert events[0] == CloseReceived(code, reason)
    assert events[-1] == ConnectionClosed(code, reason, True)
    # The echo carries the same code (or is empty for an empty close).
    (echo,) = unmask_frames(conn.data_to_send())
    assert echo[0] == 8 and echo[3] == payload[:2]


def test_valid_close_code_table() -> None:
    valid = {c for c in range(0, 6000) if is_valid_close_code(c)}
    expected = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert valid == expected


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_close_refuses_invalid_codes_locally(code: int) -> None:
    with pytest.raises(ValueError):
        server().close(code)


def test_close_reason_limited_to_123_bytes() -> None:
    conn = server()
    conn.close(1000, "x" * 123)
    assert len(unmask_frames(conn.data_to_send())[0][3]) == 125
    with pytest.raises(ValueError):
        server().close(1000, "é" * 62)  # 124 bytes


def test_close_without_code_sends_empty_payload() -> None:
    conn = client()
    conn.close(None)
    assert unmask_frames(conn.data_to_send()) == [(8, True, 0, b"")]
    assert conn.close_sent == CloseInfo(1005, "")
    with pytest.raises(ValueError):
        client().close(None, "reason without code")


def test_server_initiated_close_handshake() -> None:
    srv = server()
    srv.close(1001, "bye")
    assert srv.state is ConnectionState.CLOSING
    assert unmask_frames(srv.data_to_send()) == [(8, True, 0, close_payload(1001, b"bye"))]
    srv.close(1000)  # idempotent
    assert srv.data_to_send() == b""
    srv.receive_data(raw_frame(2, b"still flowing") + raw_frame(8, close_payload(1001)))
    assert srv.events() == [BinaryMessage(b"still flowing"), CloseReceived(1001, ""), ConnectionClosed(1001, "", True)]
    assert srv.closed
    assert srv.data_to_send() == b""  # no second close


def test_client_initiated_close_waits_for_server_eof() -> None:
    cli = client()
    cli.close(1000, "done")
    cli.data_to_send()
    cli.receive_data(raw_frame(8, close_payload(1000), mask=False))
    assert cli.events() == [CloseReceived(1000, "")]
    assert cli.state is ConnectionState.CLOSING
    cli.receive_data(b"")
    assert cli.events() == [ConnectionClosed(1000, "", True)]
    assert cli.closed


def test_client_answers_server_close_and_waits_for_eof() -> None:
    cli = client()
    cli.receive_data(raw_frame(8, close_payload(1001, b"restart"), mask=False))
    assert cli.events() == [CloseReceived(1001, "restart")]
    assert unmask_frames(cli.data_to_send()) == [(8, True, 0, close_payload(1001))]
    assert cli.state is ConnectionState.CLOSING
    cli.receive_data(b"")
    assert cli.events() == [ConnectionClosed(1001, "restart", True)]


def test_no_data_after_close_is_processed() -> None:
    srv = server()
    srv.receive_data(raw_frame(8, close_payload(1000)) + raw_frame(1, b"after") + b"\xff\xff garbage")
    assert srv.events() == [CloseReceived(1000, ""), ConnectionClosed(1000, "", True)]
    assert srv.failure is None


def test_close_mid_fragmented_message_abandons_it() -> None:
    srv = server()
    srv.receive_data(raw_frame(1, b"part", fin=False) + raw_frame(8, close_payload(1000)))
    assert srv.events() == [CloseReceived(1000, ""), ConnectionClosed(1000, "", True)]


@pytest.mark.parametrize("send", ["text", "binary", "ping", "pong"])
def test_sending_after_close_raises(send: str) -> None:
    conn = server()
    conn.receive_data(raw_frame(8, close_payload(1000, b"x")))
    with pytest.raises(ConnectionClosedError) as info:
        {"text": lambda: conn.send_text("a"), "binary": lambda: conn.send_binary(b"a"),
         "ping": lambda: conn.send_ping(), "pong": lambda: conn.send_pong()}[send]()
    assert info.value.code == 1000 and info.value.reason == "x"


def test_eof_without_close_is_abnormal() -> None:
    srv = server()
    srv.receive_data(raw_frame(1, b"partial", fin=False))
    srv.receive_data(b"")
    assert srv.events() == [ConnectionClosed(1006, "", False)]
    assert srv.closed
    srv.receive_data(raw_frame(1, b"x"))  # ignored once CLOSED
    srv.receive_data(b"")
    assert srv.events() == []


def test_eof_mid_frame_is_abnormal() -> None:
    cli = client()
    cli.receive_data(raw_frame(2, b"abcdef", mask=False)[:4])
    cli.receive_data(b"")
    assert cli.events() == [ConnectionClosed(1006, "", False)]


# --------------------------------------------------------------------------- streaming


def test_streaming_delivers_chunks_per_frame() -> None:
    srv = server(stream_messages=True)
    srv.receive_data(raw_frame(2, b"ab", fin=False) + raw_frame(0, b"cd", fin=False) + raw_frame(0, b"ef") + raw_frame(2, b"g"))
    assert srv.events() == [
        MessageChunk(b"ab", False, True, False),
        MessageChunk(b"cd", False, False, False),
        MessageChunk(b"ef", False, False, True),
        MessageChunk(b"g", False, True, True),
    ]


def test_streaming_text_decodes_split_characters() -> None:
    srv = server(stream_messages=True)
    data = "a€b".encode()  # € is 3 bytes
    srv.receive_data(raw_frame(1, data[:2], fin=False) + raw_frame(0, data[2:4], fin=False) + raw_frame(0, data[4:]) + raw_frame(1, b"z"))
    assert srv.events() == [
        MessageChunk("a", True, True, False),
        MessageChunk("€", True, False, False),
        MessageChunk("b", True, False, True),
        MessageChunk("z", True, True, True),
    ]


def test_streaming_invalid_utf8_fails_before_end() -> None:
    srv = server(stream_messages=True)
    srv.receive_data(raw_frame(1, b"ok", fin=False) + raw_frame(0, b"\xf8", fin=False))
    assert srv.events()[0] == MessageChunk("ok", True, True, False)
    assert sent_close_code(srv) == 1007


def test_streaming_truncated_utf8_at_end_fails() -> None:
    srv = server(stream_messages=True)
    srv.receive_data(raw_frame(1, b"\xe2\x82", fin=False) + raw_frame(0, b""))
    assert sent_close_code(srv) == 1007


def test_streaming_still_enforces_size_and_fragment_limits() -> None:
    srv = server(stream_messages=True, max_message_size=10)
    srv.receive_data(raw_frame(2, b"x" * 6, fin=False) + raw_frame(0, b"y" * 5))
    assert sent_close_code(srv) == 1009
    srv = server(stream_messages=True, max_fragments=2)
    srv.receive_data(raw_frame(2, b"x", fin=False) + raw_frame(0, b"y", fin=False) + raw_frame(0, b"z"))
    assert sent_close_code(srv) == 1009


def test_streaming_allows_messages_larger_than_memory_bound() -> None:
    # Streaming retains nothing, so the 2x retention bound never triggers; only max size does.
    srv = server(stream_messages=True, max_message_size=None, max_fragments=None)
    srv.receive_data(raw_frame(2, b"x", fin=False) + raw_frame(0, b"x", fin=False) * 10000 + raw_frame(0, b""))
    assert len(srv.events()) == 10002
    assert srv.state is ConnectionState.OPEN


# --------------------------------------------------------------------------- extensions


def test_extension_decode_called_for_every_frame_of_flagged_message() -> None:
    ext = CountingExtension()
    srv = server(extensions=[ext], max_message_size=100)
    xored = bytes(b ^ 0x5A for b in b"hello world")
    srv.receive_data(raw_frame(1, xored[:5], fin=False, rsv=4) + raw_frame(9, b"") + raw_frame(0, xored[5:8], fin=False) + raw_frame(0, xored[8:]))
    assert srv.events() == [Ping(b""), TextMessage("hello world")]
    assert ext.decode_calls == [
        (xored[:5], True, 4, False, 100),
        (xored[5:8], False, 4, False, 95),
        (xored[8:], False, 4, True, 92),
    ]


def test_extension_not_called_for_message_without_its_bits() -> None:
    ext = CountingExtension()
    srv = server(extensions=[ext])
    srv.receive_data(raw_frame(1, b"plain", fin=False) + raw_frame(0, b" text"))
    assert srv.events() == [TextMessage("plain text")]
    assert ext.decode_calls == []


def test_extension_rsv_on_continuation_is_rejected() -> None:
    srv = server(extensions=[CountingExtension()])
    srv.receive_data(raw_frame(2, b"a", fin=False, rsv=4) + raw_frame(0, b"b", rsv=4))
    assert sent_close_code(srv) == 1002


def test_extension_unclaimed_rsv_bit_is_rejected() -> None:
    srv = server(extensions=[CountingExtension()])
    srv.receive_data(raw_frame(2, b"a", rsv=2))
    assert sent_close_code(srv) == 1002


def test_extension_decode_size_error_closes_1009() -> None:
    srv = server(extensions=[CountingExtension()], max_message_size=4)
    srv.receive_data(raw_frame(2, b"12345", rsv=4))
    assert sent_close_code(srv) == 1009


def test_extension_output_counted_against_message_size() -> None:
    class Doubling(CountingExtension):
        def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
            return payload * 2  # ignores its budget: the connection still checks

    srv = server(extensions=[Doubling()], max_message_size=10)
    srv.receive_data(raw_frame(2, b"123456", rsv=4))
    assert sent_close_code(srv) == 1009


def test_extension_invalid_utf8_after_decode_is_1007() -> None:
    srv = server(extensions=[CountingExtension()])
    srv.receive_data(raw_frame(1, bytes([0xFF ^ 0x5A]), rsv=4))
    assert sent_close_code(srv) == 1007


def test_extension_unexpected_exception_is_1011() -> None:
    srv = server(extensions=[CountingExtension(fail_with=RuntimeError("bug"))])
    srv.receive_data(raw_frame(2, b"x", rsv=4))
    assert sent_close_code(srv) == 1011


def test_extension_protocol_error_code_is_used() -> None:
    srv = server(extensions=[CountingExtension(fail_with=ProtocolError("corrupt", 1002))])
    srv.receive_data(raw_frame(2, b"x", rsv=4))
    assert sent_close_code(srv) == 1002
    assert srv.failure is not None and str(srv.failure) == "corrupt"


@pytest.mark.parametrize("compress, rsv", [(None, 4), (True, 4), (False, 0)])
def test_extension_encode_called_once_per_message_with_compress_flag(compress: bool | None, rsv: int) -> None:
    ext = CountingExtension()
    srv = server(extensions=[ext])
    srv.send_text("abcdef", fragment_size=2, compress=compress)
    frames = unmask_frames(srv.data_to_send())
    assert ext.encode_calls == [(b"abcdef", 1, compress)]
    assert [f[2] for f in frames] == [rsv, 0, 0]
    # And the receiving side, with its own extension, recovers the text.
    cli = client(extensions=[CountingExtension()])
    cli.receive_data(b"".join(raw_frame(f[0], f[3], fin=f[1], rsv=f[2], mask=False) for f in frames))
    assert cli.events() == [TextMessage("abcdef")]


def test_two_extensions_decode_in_reverse_order() -> None:
    order: list[str] = []

    class Tagged(CountingExtension):
        def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
            order.append(self.name)
            return payload

    a = Tagged(name="a", rsv_mask=4, transform=False)
    b = Tagged(name="b", rsv_mask=2, transform=False)
    srv = server(extensions=[a, b])
    srv.receive_data(raw_frame(2, b"x", rsv=6))
    assert srv.events() == [BinaryMessage(b"x")]
    assert order == ["b", "a"]


def test_extension_frames_may_exceed_limit_on_the_wire_slightly() -> None:
    # An incompressible payload at the size limit grows a little when "compressed".
    class Growing(CountingExtension):
        def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
            return payload[:-8]

    srv = server(extensions=[Growing()], max_message_size=1000)
    srv.receive_data(raw_frame(2, b"z" * 1008, rsv=4))
    assert srv.events() == [BinaryMessage(b"z" * 1000)]


def test_speedups_are_looked_up_at_call_time(speedups_impl: str) -> None:
    conn = server()
    calls: list[int] = []
    original = _speedups.parse_frames

    def spy(*args: object) -> object:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    _speedups.parse_frames = spy  # type: ignore[assignment]
    try:
        conn.receive_data(raw_frame(1, b"x"))
    finally:
        _speedups.parse_frames = original
    assert calls == [1]


def test_receive_eof_equals_empty_receive_data() -> None:
    conn = server()
    conn.receive_eof()
    conn.receive_eof()
    assert conn.events() == [ConnectionClosed(1006, "", False)]
    assert conn.closed


def test_streaming_with_extension_decodes_each_chunk() -> None:
    ext = CountingExtension()
    srv = server(extensions=[ext], stream_messages=True)
    xored = bytes(b ^ 0x5A for b in "a€".encode())
    srv.receive_data(raw_frame(1, xored[:2], fin=False, rsv=4) + raw_frame(0, xored[2:]))
    assert srv.events() == [MessageChunk("a", True, True, False), MessageChunk("€", True, False, True)]
    assert [call[1:4] for call in ext.decode_calls] == [(True, 4, False), (False, 4, True)]


def test_non_minimal_length_encoding_is_accepted() -> None:
    # RFC 6455 asks senders for the minimal encoding; receivers commonly accept others.
    srv = server()
    srv.receive_data(bytes((0x82, 0x80 | 126)) + (3).to_bytes(2, "big") + b"\0\0\0\0" + b"abc")
    assert srv.events() == [BinaryMessage(b"abc")]


# --------------------------------------------------------------------------- I/O-layer fast paths


@pytest.mark.parametrize("stream", [False, True])
def test_plain_messages_delivers_single_frame_messages_as_str_and_bytes(stream: bool) -> None:
    conn = server(plain_messages=True, stream_messages=stream)
    data = (
        raw_frame(1, "héllo".encode())
        + raw_frame(2, b"\x00\xff")
        + raw_frame(9, b"p")
        + raw_frame(2, b"")
        + raw_frame(1, b"")
    )
    assert conn.receive_and_events(data) == ["héllo", b"\x00\xff", Ping(b"p"), b"", ""]
    assert conn.receive_and_events(b"") == [ConnectionClosed(1006, "", False)]


def test_plain_messages_keeps_fragmented_messages_as_events() -> None:
    conn = server(plain_messages=True)
    conn.receive_data(raw_frame(1, b"ab", fin=False) + raw_frame(0, b"c") + raw_frame(2, b"x", fin=False))
    conn.receive_data(raw_frame(0, b"y"))
    assert conn.events() == [TextMessage("abc"), BinaryMessage(b"xy")]
    streaming = server(plain_messages=True, stream_messages=True)
    events = streaming.receive_and_events(raw_frame(2, b"x", fin=False) + raw_frame(0, b"y"))
    assert events == [MessageChunk(b"x", False, True, False), MessageChunk(b"y", False, False, True)]


def test_receive_and_events_matches_receive_data_then_events() -> None:
    data = raw_frame(2, b"a" * 200) + raw_frame(1, b"b", fin=False) + raw_frame(10, b"") + raw_frame(0, b"c")
    for split in range(len(data) + 1):
        a, b = server(), server()
        got = a.receive_and_events(data[:split]) + a.receive_and_events(data[split:])
        b.receive_data(data[:split])
        expected = b.events()
        b.receive_data(data[split:])
        expected += b.events()
        assert got == expected
    # Pending events from earlier calls come first, partially consumed lists too.
    conn = server()
    conn.receive_data(raw_frame(2, b"1") + raw_frame(2, b"2"))
    assert conn.next_event() == BinaryMessage(b"1")
    assert conn.receive_and_events(raw_frame(2, b"3")) == [BinaryMessage(b"2"), BinaryMessage(b"3")]
    assert conn.receive_and_events(b"\x82") == []  # incomplete frame: nothing yet


def test_binary_fast_path_still_enforces_limits_and_fragment_rules() -> None:
    conn = server(max_message_size=4)
    conn.receive_data(raw_frame(2, b"12345"))
    assert sent_close_code(conn) == 1009
    conn = server()
    conn.receive_data(raw_frame(1, b"a", fin=False) + raw_frame(2, b"b"))
    assert sent_close_code(conn) == 1002


@pytest.mark.parametrize("role", ["server", "client"])
def test_send_message_equals_send_then_data_to_send(role: str) -> None:
    for message in ["héllo", "", b"\x00\x01", bytearray(b"ba"), memoryview(b"mv"), b"z" * 70000]:
        a, b = WebSocketConnection(role), WebSocketConnection(role)
        data = a.send_message(message)
        if isinstance(message, str):
            b.send_text(message)
        else:
            b.send_binary(message)
        expected = b.data_to_send()
        if role == "server":
            assert data == expected
        else:  # masked with a fresh key: compare the decoded frames
            assert unmask_frames(data) == unmask_frames(expected)
        assert a.data_to_send() == b""


def test_send_message_includes_earlier_queued_data_and_refuses_when_closed() -> None:
    conn = server()
    conn.send_ping(b"p")
    data = conn.send_message(b"x")
    assert unmask_frames(data) == [(9, True, 0, b"p"), (2, True, 0, b"x")]
    conn.close()
    with pytest.raises(ConnectionClosedError):
        conn.send_message("late")


def test_idle_connection_holds_no_receive_state_until_needed() -> None:
    conn = server(stream_messages=True)
    conn.receive_data(raw_frame(1, b"whole") + raw_frame(2, b"whole"))
    assert conn._buffer is None and conn._utf8 is None and conn._message_parts is None
    assert len(conn.events()) == 2
    conn.receive_data(raw_frame(1, "é".encode()[:1], fin=False))
    conn.receive_data(raw_frame(0, "é".encode()[1:])[:3])
    assert conn._buffer is not None and conn._utf8 is not None
    conn.receive_data(raw_frame(0, "é".encode()[1:])[3:])
    assert [e.data for e in conn.events()] == ["", "é"]
    assert conn._buffer is None
