"""Property tests: arbitrary input never raises, both speedups agree, messages round-trip."""

from __future__ import annotations

from typing import Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_websocket_helpers import CountingExtension, raw_frame
from volleyio import _speedups
from volleyio.websocket import (
    BinaryMessage,
    ConnectionClosed,
    ConnectionState,
    Event,
    Role,
    TextMessage,
    WebSocketConnection,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"\x03\xe8", b"\x03\xe8ok", b"\x03\xed", b"\x0b\xb8\xc0"]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([0, 0, 1, 1, 2, 2, 8, 9, 10, 3, 0xB]))
    payload = draw(payloads)
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 0, 4, 2, 1]))
    mask = draw(st.sampled_from([True, True, True, False]))
    data = raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    if draw(st.integers(0, 20)) == 0:
        data = data[: draw(st.integers(0, len(data)))]  # a truncated frame
    return data


@st.composite
def mostly_valid_streams(draw: st.DrawFn) -> bytes:
    """Well-formed messages (fragmented, with control frames between fragments), then
    perhaps one mutation: a flipped byte or an inserted arbitrary frame."""
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong", "close"]))
        if kind in ("ping", "pong"):
            pieces.append(raw_frame(9 if kind == "ping" else 10, draw(st.binary(max_size=10))))
            continue
        if kind == "close":
            pieces.append(raw_frame(8, draw(st.sampled_from([b"", b"\x03\xe8", b"\x0f\xa0bye", b"\x03\xf3"]))))
            continue
        body = draw(st.text(max_size=30)).encode() if kind == "text" else draw(st.binary(max_size=30))
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=7))))
        parts = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
        for index, part in enumerate(parts):
            opcode = (1 if kind == "text" else 2) if index == 0 else 0
            pieces.append(raw_frame(opcode, part, fin=index == len(parts) - 1))
            if draw(st.integers(0, 4)) == 0:
                pieces.append(raw_frame(9, b"i"))
    data = b"".join(pieces)
    mutation = draw(st.integers(0, 3))
    if mutation == 1 and data:
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ (1 << draw(st.integers(0, 7)))]) + data[pos + 1 :]
    elif mutation == 2:
        pos = draw(st.integers(0, len(pieces)))
        data = b"".join(pieces[:pos]) + draw(frames()) + b"".join(pieces[pos:])
    return data


streams = st.one_of(
    st.binary(max_size=200),
    mostly_valid_streams(),
    mostly_valid_streams(),
    st.lists(frames(), max_size=12).map(b"".join),
    st.tuples(st.lists(frames(), max_size=8).map(b"".join), st.binary(max_size=20)).map(lambda t: t[0] + t[1]),
)


def run(
    data: bytes, cuts: list[int], role: Role = Role.SERVER, extensions: Optional[list[CountingExtension]] = None, eof: bool = True, **options: object
) -> tuple[list[Event], Optional[int], Optional[int], ConnectionState, bytes]:
    conn = WebSocketConnection(role, extensions=extensions or [], max_message_size=64, max_fragments=6, **options)  # type: ignore[arg-type]
    events: list[Event] = []
    out = []
    start = 0
    # Callers pass only interior split points, so no piece is empty (b"" would mean EOF).
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > start:
            conn.receive_data(data[start:cut])
            start = cut
        events.extend(conn.events())
        out.append(conn.data_to_send())
    if eof:
        conn.receive_data(b"")
        events.extend(conn.events())
    close_code = conn.close_sent.code if conn.close_sent else None
    failure_code = conn.failure.code if conn.failure else None
    return events, close_code, failure_code, conn.state, b"".join(out)


def _without_empty_cuts(data: bytes, cuts: list[int]) -> list[int]:
    # receive_data(b"") means EOF, so a split point may not produce an empty piece mid-stream.
    return [c % (len(data) + 1) for c in cuts if 0 < c % (len(data) + 1) < len(data)]


@SETTINGS
@given(streams, st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_random_streams_never_raise_and_chunking_does_not_matter(data: bytes, cuts: list[int], server_role: bool) -> None:
    role = Role.SERVER if server_role else Role.CLIENT
    cuts = _without_empty_cuts(data, cuts)
    whole = run(data, [], role)
    pieces = run(data, cuts, role)
    # Outgoing bytes differ for a client (fresh mask keys); compare everything else.
    assert whole[:4] == pieces[:4]
    if role is Role.SERVER:
        assert whole[4] == pieces[4]
    events = whole[0]
    assert isinstance(events[-1], ConnectionClosed)
    assert sum(isinstance(e, ConnectionClosed) for e in events) == 1


@SETTINGS
@given(streams, st.lists(st.integers(0, 10_000), max_size=4), st.booleans(), st.booleans())
def test_both_speedups_implementations_agree(data: bytes, cuts: list[int], server_role: bool, stream: bool) -> None:
    role = Role.SERVER if server_role else Role.CLIENT
    cuts = _without_empty_cuts(data, cuts)
    previous = _speedups.IMPLEMENTATION
    results = {}
    try:
        for name in _speedups.available():
            _speedups.select(name)
            result = run(data, cuts, role, stream_messages=stream)
            results[name] = result[:4] + ((result[4],) if role is Role.SERVER else ())
    finally:
        _speedups.select(previous)
    assert len(set(map(repr, results.values()))) == 1, results


@SETTINGS
@given(streams, st.booleans())
def test_random_streams_with_extension_never_raise(data: bytes, stream: bool) -> None:
    events, close_code, failure_code, state, _ = run(data, [], Role.SERVER, [CountingExtension()], stream_messages=stream)
    assert isinstance(events[-1], ConnectionClosed)
    if failure_code is not None:
        assert close_code == failure_code
        assert state is ConnectionState.CLOSED


messages = st.lists(
    st.one_of(st.text(max_size=300).map(lambda s: ("text", s)), st.binary(max_size=300).map(lambda b: ("binary", b))),
    max_size=10,
)


@SETTINGS
@given(
    messages,
    st.lists(st.one_of(st.none(), st.integers(1, 64)), min_size=10, max_size=10),
    st.lists(st.integers(1, 10_000), max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_round_trip_random_messages(
    msgs: list[tuple[str, object]], fragment_sizes: list[Optional[int]], cuts: list[int], client_sends: bool, with_extension: bool
) -> None:
    sender_role, receiver_role = (Role.CLIENT, Role.SERVER) if client_sends else (Role.SERVER, Role.CLIENT)
    sender = WebSocketConnection(sender_role, extensions=[CountingExtension()] if with_extension else [])
    receiver = WebSocketConnection(receiver_role, extensions=[CountingExtension()] if with_extension else [])
    expected: list[Event] = []
    for (kind, value), fragment_size in zip(msgs, fragment_sizes):
        if kind == "text":
            assert isinstance(value, str)
            sender.send_text(value, fragment_size=fragment_size)
            expected.append(TextMessage(value))
        else:
            assert isinstance(value, bytes)
            sender.send_binary(value, fragment_size=fragment_size)
            expected.append(BinaryMessage(value))
    sender.send_ping(b"p")
    wire = sender.data_to_send()
    start = 0
    received: list[Event] = []
    for cut in sorted(c for c in set(cuts) if c < len(wire)) + [len(wire)]:
        if cut > start:
            receiver.receive_data(wire[start:cut])
            start = cut
        received.extend(receiver.events())
    assert [e for e in received if isinstance(e, (TextMessage, BinaryMessage))] == expected
    assert receiver.state is ConnectionState.OPEN and receiver.failure is None


@SETTINGS
@given(st.text(max_size=200), st.integers(1, 50))
def test_streaming_chunks_concatenate_to_message(text: str, fragment_size: int) -> None:
    sender = WebSocketConnection(Role.CLIENT)
    receiver = WebSocketConnection(Role.SERVER, stream_messages=True)
    sender.send_text(text, fragment_size=fragment_size)
    receiver.receive_data(sender.data_to_send())
    chunks = receiver.events()
    assert "".join(c.data for c in chunks) == text  # type: ignore[union-attr, misc]
    assert chunks[0].first and chunks[-1].final  # type: ignore[union-attr]
