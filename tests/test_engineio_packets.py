"""Engine.IO v4 packet and payload codec (PROTOCOL-NOTES "Packet types and encodings")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volleyio.engineio.packets import (
    RECORD_SEPARATOR,
    EngineIOParseError,
    Packet,
    PacketType,
    decode_payload,
    decode_websocket_frame,
    encode_payload,
    encode_websocket_frame,
)
from volleyio.errors import ProtocolError


@pytest.mark.parametrize(
    ("packet_type", "digit"),
    [
        (PacketType.OPEN, "0"),
        (PacketType.CLOSE, "1"),
        (PacketType.PING, "2"),
        (PacketType.PONG, "3"),
        (PacketType.MESSAGE, "4"),
        (PacketType.UPGRADE, "5"),
        (PacketType.NOOP, "6"),
    ],
)
def test_packet_type_digits(packet_type: PacketType, digit: str) -> None:
    assert encode_websocket_frame(Packet(packet_type)) == digit
    assert decode_websocket_frame(digit) == Packet(packet_type, "")


def test_record_separator_is_0x1e() -> None:
    assert RECORD_SEPARATOR == "\x1e"


@pytest.mark.parametrize(
    ("packet", "frame"),
    [
        (Packet(PacketType.MESSAGE, "hello"), "4hello"),
        (Packet(PacketType.PING, "probe"), "2probe"),
        (Packet(PacketType.PONG, "probe"), "3probe"),
        (Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04"),
        (Packet(PacketType.MESSAGE, ""), "4"),
        (Packet(PacketType.MESSAGE, "é\u2028😀"), "4é\u2028😀"),
    ],
)
def test_websocket_frame_encoding(packet: Packet, frame: str | bytes) -> None:
    assert encode_websocket_frame(packet) == frame
    assert decode_websocket_frame(frame) == packet


def test_binary_websocket_frame_has_no_type_byte() -> None:
    # A binary frame starting with "4" is still raw data, not a typed packet.
    assert decode_websocket_frame(b"4abc") == Packet(PacketType.MESSAGE, b"4abc")


@pytest.mark.parametrize("frame", ["", "7", "9hello", "a", "xyz", "-1", " 4"])
def test_websocket_frame_bad_type_is_parse_error(frame: str) -> None:
    with pytest.raises(EngineIOParseError):
        decode_websocket_frame(frame)


def test_parse_error_is_protocol_error() -> None:
    assert issubclass(EngineIOParseError, ProtocolError)


def test_only_message_packets_carry_binary() -> None:
    with pytest.raises(ValueError):
        Packet(PacketType.PING, b"x")


def test_payload_example_from_notes() -> None:
    packets = [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    payload, leftover = encode_payload(packets)
    assert payload == "4hello\x1ebAQIDBA=="
    assert leftover == []
    assert decode_payload("4hello\x1ebAQIDBA==") == packets
    assert decode_payload(b"4hello\x1ebAQIDBA==") == packets


def test_payload_single_packet_has_no_separator() -> None:
    assert encode_payload([Packet(PacketType.PING)]) == ("2", [])


def test_payload_caps_at_16_and_returns_the_rest_in_order() -> None:
    packets = [Packet(PacketType.MESSAGE, str(i)) for i in range(20)]
    payload, leftover = encode_payload(packets)
    assert payload.count(RECORD_SEPARATOR) == 15
    assert decode_payload(payload) == packets[:16]
    assert leftover == packets[16:]


def test_payload_custom_cap_and_no_cap() -> None:
    packets = [Packet(PacketType.MESSAGE, str(i)) for i in range(5)]
    assert encode_payload(packets, max_packets=2)[1] == packets[2:]
    assert encode_payload(packets, max_packets=None)[1] == []
    with pytest.raises(ValueError):
        encode_payload(packets, max_packets=0)


def test_payload_decode_accepts_more_than_16_packets() -> None:
    body = RECORD_SEPARATOR.join(["4x"] * 100)
    assert len(decode_payload(body)) == 100


@pytest.mark.parametrize(
    "body",
    [
        "",  # empty body: one empty packet
        "abc",
        "4hello\x1e",  # trailing empty packet
        "\x1e4hello",
        "4a\x1e\x1e4b",
        "4a\x1e9b",
        "b!!!!",  # not base64
        "bAQIDBA=",  # bad padding
        "bAQID BA==",  # whitespace is not base64
        b"4\xff\xfe",  # invalid UTF-8
    ],
)
def test_payload_decode_is_strict(body: str | bytes) -> None:
    with pytest.raises(EngineIOParseError):
        decode_payload(body)


def test_payload_decodes_text_with_utf8() -> None:
    assert decode_payload("4é".encode()) == [Packet(PacketType.MESSAGE, "é")]


def test_empty_binary_message_in_payload() -> None:
    payload, _ = encode_payload([Packet(PacketType.MESSAGE, b"")])
    assert payload == "b"
    assert decode_payload(payload) == [Packet(PacketType.MESSAGE, b"")]


_packet_strategy = st.one_of(
    st.builds(
        Packet,
        st.sampled_from(list(PacketType)),
        st.text(alphabet=st.characters(blacklist_characters="\x1e", blacklist_categories=("Cs",))),
    ),
    st.builds(lambda b: Packet(PacketType.MESSAGE, b), st.binary()),
)


@given(st.lists(_packet_strategy, min_size=1, max_size=40))
def test_payload_round_trip(packets: list[Packet]) -> None:
    decoded: list[Packet] = []
    remaining = packets
    while remaining:
        payload, remaining = encode_payload(remaining)
        decoded.extend(decode_payload(payload.encode("utf-8")))
    assert decoded == packets


@given(_packet_strategy)
def test_websocket_round_trip(packet: Packet) -> None:
    assert decode_websocket_frame(encode_websocket_frame(packet)) == packet
