"""Socket.IO v5 codec (PROTOCOL-NOTES "Socket.IO v5" / "Encoding", "Events, acks, binary")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volleyio.errors import ProtocolError
from volleyio.socketio.packets import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Packet,
    PacketType,
    SocketIODecodeError,
    SocketIOEncodeError,
    encode_packet,
    is_payload_valid,
)

P0 = {"_placeholder": True, "num": 0}
P1 = {"_placeholder": True, "num": 1}


def decode(*messages: str | bytes) -> Packet:
    decoder = Decoder()
    result = None
    for message in messages:
        result = decoder.receive(message)
    assert result is not None
    return result


# ------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (Packet(PacketType.CONNECT), ["0"]),
        (Packet(PacketType.CONNECT, "/", {"sid": "abc"}), ['0{"sid":"abc"}']),
        (Packet(PacketType.CONNECT, "/admin", {"sid": "abc"}), ['0/admin,{"sid":"abc"}']),
        (Packet(PacketType.DISCONNECT), ["1"]),
        (Packet(PacketType.DISCONNECT, "/admin"), ["1/admin,"]),
        (Packet(PacketType.EVENT, "/", ["hello", 1]), ['2["hello",1]']),
        (Packet(PacketType.EVENT, "/admin", ["hello"], 12), ['2/admin,12["hello"]']),
        (Packet(PacketType.EVENT, "/", ["a"], 0), ['20["a"]']),
        (Packet(PacketType.ACK, "/", [], 3), ["33[]"]),
        (Packet(PacketType.ACK, "/admin", ["x"], 13), ['3/admin,13["x"]']),
        (
            Packet(PacketType.CONNECT_ERROR, "/random", {"message": "Invalid namespace"}),
            ['4/random,{"message":"Invalid namespace"}'],
        ),
        (Packet(PacketType.EVENT, "/", ["é", "\u2028"]), ['2["é","\u2028"]']),
    ],
)
def test_encode_text_packets(packet: Packet, wire: list[str | bytes]) -> None:
    assert encode_packet(packet) == wire


def test_encode_binary_event_suite_example() -> None:
    packet = Packet(PacketType.EVENT, "/", ["message-back", b"\x01\x02", b"\x03"])
    assert encode_packet(packet) == ['52-["message-back",' + json.dumps(P0, separators=(",", ":")) + ","
                                     + json.dumps(P1, separators=(",", ":")) + "]", b"\x01\x02", b"\x03"]


def test_encode_binary_ack_suite_example() -> None:
    assert encode_packet(Packet(PacketType.ACK, "/", [b"a", b"b"], 789)) == [
        '62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"a",
        b"b",
    ]


def test_placeholders_are_depth_first_in_encounter_order() -> None:
    data = ["ev", {"a": [b"0", {"b": b"1"}], "c": b"2"}, b"3", [[b"4"]]]
    header, *buffers = encode_packet(Packet(PacketType.EVENT, "/nsp", data, 7))
    assert buffers == [b"0", b"1", b"2", b"3", b"4"]
    assert isinstance(header, str) and header.startswith("55-/nsp,7[")
    assert json.loads(header[len("55-/nsp,7"):]) == [
        "ev",
        {"a": [{"_placeholder": True, "num": 0}, {"b": {"_placeholder": True, "num": 1}}],
         "c": {"_placeholder": True, "num": 2}},
        {"_placeholder": True, "num": 3},
        [[{"_placeholder": True, "num": 4}]],
    ]


def test_bytearray_and_memoryview_are_binary() -> None:
    assert encode_packet(Packet(PacketType.EVENT, "/", ["e", bytearray(b"x"), memoryview(b"y")]))[1:] == [b"x", b"y"]


def test_binary_type_without_binary_is_downgraded() -> None:
    assert encode_packet(Packet(PacketType.BINARY_EVENT, "/", ["e"])) == ['2["e"]']


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(SocketIOEncodeError):
        encode_packet(Packet(PacketType.EVENT, "/", ["e", value]))


def test_encode_rejects_too_deep() -> None:
    data: Any = "x"
    for _ in range(1001):
        data = [data]
    with pytest.raises(SocketIOEncodeError):
        encode_packet(Packet(PacketType.EVENT, "/", ["e", data]))


def test_encode_accepts_depth_1000() -> None:
    data: Any = 1
    for _ in range(998):
        data = [data]
    header = encode_packet(Packet(PacketType.EVENT, "/", ["e", data]))[0]
    assert isinstance(header, str)
    assert header == '2["e",' + "[" * 998 + "1" + "]" * 998 + "]"
    nested = decode(header).data[1]
    depth = 0
    while isinstance(nested, list):
        (nested,) = nested
        depth += 1
    assert (depth, nested) == (998, 1)


@pytest.mark.parametrize("ack_id", [-1, MAX_ACK_ID + 1])
def test_encode_rejects_bad_ack_id(ack_id: int) -> None:
    with pytest.raises(SocketIOEncodeError):
        encode_packet(Packet(PacketType.EVENT, "/", ["e"], ack_id))


def test_encode_lone_surrogate_is_escaped() -> None:
    header = encode_packet(Packet(PacketType.EVENT, "/", ["e", "\ud800"]))[0]
    assert isinstance(header, str)
    header.encode("utf-8")  # writable as UTF-8
    assert decode(header).data == ["e", "\ud800"]


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("0", Packet(PacketType.CONNECT)),
        ('0{"token":"x"}', Packet(PacketType.CONNECT, "/", {"token": "x"})),
        ("0/custom,", Packet(PacketType.CONNECT, "/custom")),
        ("0/custom", Packet(PacketType.CONNECT, "/custom")),
        ('0/admin,{"a":1}', Packet(PacketType.CONNECT, "/admin", {"a": 1})),
        ("1", Packet(PacketType.DISCONNECT)),
        ("1/custom", Packet(PacketType.DISCONNECT, "/custom")),
        ("1/custom,", Packet(PacketType.DISCONNECT, "/custom")),
        ('2["hello"]', Packet(PacketType.EVENT, "/", ["hello"])),
        ('2[1,2]', Packet(PacketType.EVENT, "/", [1, 2])),
        ('2[1.5]', Packet(PacketType.EVENT, "/", [1.5])),
        ('2/a,5["x",{"y":null}]', Packet(PacketType.EVENT, "/a", ["x", {"y": None}], 5)),
        ('20["x"]', Packet(PacketType.EVENT, "/", ["x"], 0)),
        ("3[]", Packet(PacketType.ACK, "/", [])),
        ("35[]", Packet(PacketType.ACK, "/", [], 5)),
        ('3/a,5["r"]', Packet(PacketType.ACK, "/a", ["r"], 5)),
        ('4{"message":"no"}', Packet(PacketType.CONNECT_ERROR, "/", {"message": "no"})),
        ('4"legacy"', Packet(PacketType.CONNECT_ERROR, "/", "legacy")),
        (
            '4/random,{"message":"Invalid namespace"}',
            Packet(PacketType.CONNECT_ERROR, "/random", {"message": "Invalid namespace"}),
        ),
        (f"2{MAX_ACK_ID}[\"e\"]", Packet(PacketType.EVENT, "/", ["e"], MAX_ACK_ID)),
    ],
)
def test_decode_text_packets(wire: str, expected: Packet) -> None:
    assert decode(wire) == expected


def test_decode_suite_binary_event() -> None:
    decoder = Decoder()
    assert decoder.receive('52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]') is None
    assert decoder.reconstructing
    assert decoder.receive(b"\x01") is None
    assert decoder.receive(b"\x02") == Packet(PacketType.BINARY_EVENT, "/", ["message", b"\x01", b"\x02"])
    assert not decoder.reconstructing


def test_decode_suite_binary_event_with_ack() -> None:
    packet = decode('52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"a", b"b")
    assert packet == Packet(PacketType.BINARY_EVENT, "/", ["message-with-ack", b"a", b"b"], 789)


def test_decode_binary_ack_with_namespace() -> None:
    assert decode('61-/nsp,4[{"_placeholder":true,"num":0}]', b"z") == Packet(PacketType.BINARY_ACK, "/nsp", [b"z"], 4)


def test_decode_placeholders_nested() -> None:
    packet = decode('52-["e",{"a":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]', b"0", b"1")
    assert packet.data == ["e", {"a": [b"1"]}, b"0"]


@pytest.mark.parametrize("wire", ['50-["e"]', '600-[]'])
def test_decode_zero_attachments_is_illegal(wire: str) -> None:
    with pytest.raises(SocketIODecodeError, match="illegal attachments"):
        Decoder().receive(wire)


def test_decoder_reusable_after_binary_packet() -> None:
    decoder = Decoder()
    decoder.receive('51-["e",{"_placeholder":true,"num":0}]')
    decoder.receive(b"x")
    assert decoder.receive('2["next"]') == Packet(PacketType.EVENT, "/", ["next"])


@pytest.mark.parametrize(
    "wire",
    [
        "",
        "7",
        "9[]",
        "a",
        "abc",  # suite: 4abc at Engine.IO level
        "2{}",  # suite: 42{}
        'abc["x"]',
        '2abc["message"]',  # suite: 42abc[...]
        "2",  # event without payload
        "2[]",  # empty event
        "2[{}]",  # first element not string/number
        "2[true]",
        "2[null]",
        '2"x"',
        "2null",
        "3",
        "3{}",
        '3"x"',
        "0[]",
        '0"x"',
        "0null",
        '1{"a":1}',
        "1[]",
        "4",
        "4[]",
        "4null",
        '2["a"',  # truncated JSON
        '2["a"]x',  # trailing garbage
        "2[NaN]",
        "2[Infinity]",
        "2[-Infinity]",
        '2["e",1e999]',
        '2["e",-1e999]',
        f'2{MAX_ACK_ID + 1}["e"]',
        '299999999999999999999["e"]',
        "2" + "1" * 5000 + '["e"]',
        '2["e",' + "1" * 5000 + "]",
        '2["e",-' + "9" * 1001 + "]",
        '2["e","\\x"]',  # invalid escape
    ],
)
def test_decode_errors(wire: str) -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(wire)


@pytest.mark.parametrize("event", sorted(RESERVED_EVENTS))
def test_reserved_event_names_refused(event: str) -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(json.dumps([event]).join(["2", ""]))


def test_numeric_event_name_accepted() -> None:
    assert decode("2[42]").data == [42]


def test_long_integer_within_cap_decodes_exactly() -> None:
    digits = "9" * 1000
    assert decode(f'2["e",{digits}]').data == ["e", int(digits)]


def test_huge_number_refused_in_linear_time() -> None:
    # 1 MB of digits: must be refused by the digit cap, never reach int().
    with pytest.raises(SocketIODecodeError):
        Decoder().receive('2["e",' + "7" * 1_000_000 + "]")


def test_depth_cap() -> None:
    ok = '2["e",' + "[" * 998 + "]" * 998 + "]"  # depth 999 + outer array = 1000
    assert decode(ok).data[0] == "e"
    too_deep = '2["e",' + "[" * 1000 + "]" * 1000 + "]"
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(too_deep)
    with pytest.raises(SocketIODecodeError):
        Decoder().receive('2["e",' + "[" * 100_000)


def test_brackets_inside_strings_do_not_count_for_depth() -> None:
    text = '2["' + "[{" * 2000 + '"]'
    assert decode(text).data == ["[{" * 2000]


def test_custom_depth_cap() -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder(max_depth=2).receive('2["e",[[1]]]')


@pytest.mark.parametrize(
    "wire",
    [
        '5-["e"]',  # no count
        '5x-["e"]',
        '51["e"]',  # no dash
        '511-["e"]',  # over 10 attachments
        '599999-["e"]',
    ],
)
def test_bad_attachment_header(wire: str) -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(wire)


def test_max_attachments_default_10_and_configurable() -> None:
    assert Decoder().receive('510-["e"]') is None
    with pytest.raises(SocketIODecodeError, match="too many attachments"):
        Decoder(max_attachments=2).receive('53-["e"]')


def test_text_while_attachments_expected_is_error() -> None:
    decoder = Decoder()
    decoder.receive('52-["e",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    decoder.receive(b"a")
    with pytest.raises(SocketIODecodeError):
        decoder.receive('2["e"]')


def test_binary_without_header_is_error() -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(b"stray")


@pytest.mark.parametrize(
    "placeholder",
    [
        '{"_placeholder":true,"num":1}',
        '{"_placeholder":true,"num":-1}',
        '{"_placeholder":true,"num":"0"}',
        '{"_placeholder":true,"num":0.5}',
        '{"_placeholder":true,"num":true}',
        '{"_placeholder":true}',
    ],
)
def test_illegal_placeholder_is_error(placeholder: str) -> None:
    decoder = Decoder()
    decoder.receive(f'51-["e",{placeholder}]')
    with pytest.raises(SocketIODecodeError):
        decoder.receive(b"x")


def test_placeholder_must_be_exactly_true() -> None:
    assert decode('51-["e",{"_placeholder":1,"num":0}]', b"x").data == ["e", {"_placeholder": 1, "num": 0}]


def test_placeholder_in_plain_event_left_alone() -> None:
    assert decode('2["e",{"_placeholder":true,"num":0}]').data == ["e", P0]


def test_decode_error_is_protocol_error() -> None:
    assert issubclass(SocketIODecodeError, ProtocolError)


@pytest.mark.parametrize(
    ("packet_type", "payload", "valid"),
    [
        (PacketType.CONNECT, None, True),
        (PacketType.CONNECT, {}, True),
        (PacketType.CONNECT, [], False),
        (PacketType.CONNECT, "x", False),
        (PacketType.DISCONNECT, None, True),
        (PacketType.DISCONNECT, {}, False),
        (PacketType.CONNECT_ERROR, {"message": "m"}, True),
        (PacketType.CONNECT_ERROR, "m", True),
        (PacketType.CONNECT_ERROR, [], False),
        (PacketType.EVENT, ["e"], True),
        (PacketType.EVENT, [1], True),
        (PacketType.EVENT, [True], False),
        (PacketType.EVENT, [], False),
        (PacketType.EVENT, ["connect"], False),
        (PacketType.BINARY_EVENT, ["newListener"], False),
        (PacketType.BINARY_EVENT, ["ok"], True),
        (PacketType.ACK, [], True),
        (PacketType.ACK, {}, False),
        (PacketType.BINARY_ACK, [b"x"], True),
    ],
)
def test_is_payload_valid(packet_type: PacketType, payload: Any, valid: bool) -> None:
    assert is_payload_valid(packet_type, payload) is valid


# ------------------------------------------------------------------ round trips

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.binary(max_size=64),
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200)
@given(
    event=st.text(min_size=1).filter(lambda s: s not in RESERVED_EVENTS),
    args=st.lists(_json_values, max_size=6),
    namespace=st.sampled_from(["/", "/admin", "/a-b_c"]),
    ack_id=st.none() | st.integers(min_value=0, max_value=MAX_ACK_ID),
)
def test_event_round_trip(event: str, args: list[Any], namespace: str, ack_id: int | None) -> None:
    wire = encode_packet(Packet(PacketType.EVENT, namespace, [event, *args], ack_id))
    decoder = Decoder(max_attachments=1000)
    result = None
    for index, message in enumerate(wire):
        result = decoder.receive(message)
        assert (result is None) == (index < len(wire) - 1)
    assert result is not None
    assert result.namespace == namespace and result.id == ack_id
    assert result.data == [event, *args]
    expected_type = PacketType.BINARY_EVENT if len(wire) > 1 else PacketType.EVENT
    assert result.type is expected_type


@settings(max_examples=100)
@given(args=st.lists(_json_values, max_size=6), ack_id=st.integers(min_value=0, max_value=MAX_ACK_ID))
def test_ack_round_trip(args: list[Any], ack_id: int) -> None:
    wire = encode_packet(Packet(PacketType.ACK, "/", args, ack_id))
    decoder = Decoder(max_attachments=1000)
    result = None
    for message in wire:
        result = decoder.receive(message)
    assert result is not None and result.data == args and result.id == ack_id


# ------------------------------------------------------------------ JSON fast paths


def test_payload_with_surrounding_whitespace_decodes_like_json_parse() -> None:
    # JSON.parse accepts whitespace around the value; the fast scanner path falls back.
    assert decode('2 ["a",1] \n').data == ["a", 1]
    assert decode('3 \t[]').data == []


@pytest.mark.parametrize("text", ['2["a"] x', '2["a"]]', '2["a",', "2[1,2", '2["a"]["b"]'])
def test_trailing_or_missing_json_is_refused(text: str) -> None:
    with pytest.raises(SocketIODecodeError):
        Decoder().receive(text)


def test_unencodable_data_raises_encode_errors() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for data in (cyclic, {"k": object()}, {"k": {1, 2}}, [float("inf")]):
        with pytest.raises(SocketIOEncodeError):
            encode_packet(Packet(PacketType.EVENT, "/", ["e", data]))


def test_encoding_matches_compact_json_dumps() -> None:
    data = ["e", {"b": [1.5, None, True, False], "a": "é\u2028"}, 10**20, -0.0, "\x00\"\\"]
    expected = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    assert encode_packet(Packet(PacketType.EVENT, "/chat", data, 7)) == ["2/chat,7" + expected]
