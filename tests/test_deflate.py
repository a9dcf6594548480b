"""permessage-deflate (RFC 7692): negotiation tables, framing rules, bounded inflate,
threshold/opt-out, prepared messages."""

from __future__ import annotations

import random
import sys
import tracemalloc
import zlib
from typing import Optional

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volleyio import _speedups
from volleyio.errors import HandshakeError, ProtocolError
from volleyio.websocket import (
    ClientHandshake,
    HandshakeAccepted,
    HandshakeRejected,
    compute_accept,
    deflate,
    server_handshake,
)
from volleyio.websocket.deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    PreparedMessage,
    ServerPerMessageDeflateFactory,
)
from volleyio.websocket.extensions import parse_extensions_header

Params = list[tuple[str, Optional[str]]]
LIMIT = 1 << 20


@pytest.fixture(params=["single-call", "general"], autouse=True)
def inflate_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test through both inflate paths of decode_fragment: the single-call
    path for unfragmented messages (forced on for every size) and the general
    fragment-by-fragment path (forced for every message)."""
    monkeypatch.setattr(deflate, "_SMALL_MESSAGE", sys.maxsize if request.param == "single-call" else -1)
    return str(request.param)


def params_of(header: str) -> Params:
    ((name, params),) = parse_extensions_header([header])
    assert name == "permessage-deflate"
    return params


def offers_of(header: str) -> list[Params]:
    return [params for _, params in parse_extensions_header([header])]


def json_text(size: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    items = []
    total = 0
    while total < size:
        item = f'{{"id":{rnd.randrange(10**6)},"user":"u{rnd.randrange(500)}","event":"{rnd.choice(["join", "leave", "message"])}","text":"{rnd.choice(["hello", "hi there", "ok", "see you"])}"}}'
        items.append(item)
        total += len(item) + 1
    return ("[" + ",".join(items) + "]").encode()[:size]


def pair(server_factory: ServerPerMessageDeflateFactory, client_factory: ClientPerMessageDeflateFactory) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Negotiate through the header text both ways; return (server ext, client ext)."""
    negotiated = server_factory.negotiate(offers_of(client_factory.offer()))
    assert negotiated is not None
    response, server_ext = negotiated
    client_ext = client_factory.accept(params_of(response))
    return server_ext, client_ext


def deliver(sender: PerMessageDeflate, receiver: PerMessageDeflate, payload: bytes, fragments: int = 1, compress: Optional[bool] = None) -> bytes:
    wire, rsv = sender.encode_message(payload, 2, compress)
    if not rsv:
        return wire
    step = max(1, -(-len(wire) // fragments))
    chunks = [wire[i : i + step] for i in range(0, len(wire), step)] or [b""]
    out = b""
    for index, chunk in enumerate(chunks):
        out += receiver.decode_fragment(chunk, index == 0, rsv, index == len(chunks) - 1, LIMIT - len(out))
    return out


# ---------------------------------------------------------------- server negotiation

SERVER_CASES = [
    # (factory kwargs, client offer header, expected response header or None when declined)
    ({}, "permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
    ({}, "permessage-deflate; client_max_window_bits", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ({}, "permessage-deflate; client_max_window_bits=10", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
    ({}, "permessage-deflate; client_max_window_bits=15", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ({}, "permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
    ({}, "permessage-deflate; server_max_window_bits=15", "permessage-deflate; server_max_window_bits=12"),
    ({}, "permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits=8"),
    ({}, "permessage-deflate; client_max_window_bits=8", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8"),
    ({}, "permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ({}, "permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    (
        {},
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9",
    ),
    ({"server_no_context_takeover": True}, "permessage-deflate", "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ({"client_no_context_takeover": True}, "permessage-deflate", "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ({"server_max_window_bits": 15, "client_max_window_bits": None}, "permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ({"server_max_window_bits": 15, "client_max_window_bits": None}, "permessage-deflate; client_max_window_bits=11", "permessage-deflate; client_max_window_bits=11"),
    ({"server_max_window_bits": 15}, "permessage-deflate; server_max_window_bits=15", "permessage-deflate; server_max_window_bits=15"),
    # unsupported offer declined (require_client_max_window_bits) ...
    ({"require_client_max_window_bits": True}, "permessage-deflate", None),
    # ... but the next acceptable offer is answered
    (
        {"require_client_max_window_bits": True},
        "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    ),
    # several acceptable offers: the first one wins
    ({}, "permessage-deflate; server_max_window_bits=9, permessage-deflate", "permessage-deflate; server_max_window_bits=9"),
]


@pytest.mark.parametrize(("config", "offer", "expected"), SERVER_CASES)
def test_server_negotiation(config: dict[str, object], offer: str, expected: Optional[str]) -> None:
    result = ServerPerMessageDeflateFactory(**config).negotiate(offers_of(offer))  # type: ignore[arg-type]
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert result[0] == expected


@pytest.mark.parametrize(
    ("offer", "local_bits", "remote_bits", "local_nct", "remote_nct"),
    [
        ("permessage-deflate", 12, 15, False, False),
        ("permessage-deflate; client_max_window_bits", 12, 12, False, False),
        ("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8", 8, 8, False, False),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", 12, 15, True, True),
    ],
)
def test_server_extension_state(offer: str, local_bits: int, remote_bits: int, local_nct: bool, remote_nct: bool) -> None:
    result = ServerPerMessageDeflateFactory().negotiate(offers_of(offer))
    assert result is not None
    extension = result[1]
    assert extension.is_server
    assert (extension.local_max_window_bits, extension.remote_max_window_bits) == (local_bits, remote_bits)
    assert (extension.local_no_context_takeover, extension.remote_no_context_takeover) == (local_nct, remote_nct)
    assert extension.rsv_mask == 0x4 and extension.name == "permessage-deflate"
    assert (extension.mem_level, extension.threshold) == (5, 1024)


MALFORMED_OFFERS = [
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",  # duplicate
    "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",  # duplicate
    "permessage-deflate; unknown_param",  # unknown
    "permessage-deflate; server_max_window_bits",  # value required
    "permessage-deflate; server_max_window_bits=7",  # out of range
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=0x0f",  # not a decimal
    "permessage-deflate; client_max_window_bits=010",  # leading zero: not in the ABNF
    "permessage-deflate; server_no_context_takeover=1",  # value on a flag
    'permessage-deflate; client_no_context_takeover="x"',
]


@pytest.mark.parametrize("offer", MALFORMED_OFFERS)
def test_server_declines_malformed_offer_by_default(offer: str) -> None:
    # RFC 7692 section 7.1: the server MUST decline such an offer -- not fail the handshake.
    factory = ServerPerMessageDeflateFactory()
    assert factory.reject_malformed_offers is False
    assert factory.negotiate(offers_of(offer)) is None
    # ... and negotiation goes on with the client's next offer.
    result = factory.negotiate(offers_of(offer + ", permessage-deflate; client_max_window_bits"))
    assert result is not None
    assert result[0] == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert result[1].remote_max_window_bits == 12


@pytest.mark.parametrize("offer", MALFORMED_OFFERS)
def test_server_can_reject_malformed_offer_instead(offer: str) -> None:
    factory = ServerPerMessageDeflateFactory(reject_malformed_offers=True)
    with pytest.raises(HandshakeError) as info:
        factory.negotiate(offers_of(offer))
    assert info.value.status == 400
    # Strict means strict even when a good offer follows the bad one.
    with pytest.raises(HandshakeError):
        factory.negotiate(offers_of(offer + ", permessage-deflate"))


@pytest.mark.parametrize(
    "config",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 16},
        {"mem_level": 0},
        {"mem_level": 10},
        {"compression_level": 10},
        {"threshold": -1},
    ],
)
def test_factories_validate_configuration(config: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(**config)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ClientPerMessageDeflateFactory(**config)  # type: ignore[arg-type]


def test_server_factory_validates_configuration() -> None:
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(server_max_window_bits=7)
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(client_max_window_bits=16)
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(client_max_window_bits=None, require_client_max_window_bits=True)


# ---------------------------------------------------------------- client negotiation

CLIENT_OFFERS = [
    ({}, "permessage-deflate; client_max_window_bits"),
    ({"client_max_window_bits": None}, "permessage-deflate"),
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=10"),
    (
        {"server_no_context_takeover": True, "client_no_context_takeover": True, "server_max_window_bits": 9},
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits",
    ),
]


@pytest.mark.parametrize(("config", "expected"), CLIENT_OFFERS)
def test_client_offer(config: dict[str, object], expected: str) -> None:
    assert ClientPerMessageDeflateFactory(**config).offer() == expected  # type: ignore[arg-type]


CLIENT_ACCEPT_CASES = [
    # (factory kwargs, server response, (local bits, remote bits, local nct, remote nct))
    ({}, "permessage-deflate", (15, 15, False, False)),
    ({}, "permessage-deflate; client_max_window_bits=12; server_max_window_bits=12", (12, 12, False, False)),
    ({}, "permessage-deflate; client_max_window_bits=8", (8, 15, False, False)),
    ({"client_max_window_bits": 11}, "permessage-deflate", (11, 15, False, False)),
    ({"client_max_window_bits": 11}, "permessage-deflate; client_max_window_bits=9", (9, 15, False, False)),
    ({}, "permessage-deflate; server_no_context_takeover", (15, 15, False, True)),
    ({}, "permessage-deflate; client_no_context_takeover", (15, 15, True, False)),
    ({"client_no_context_takeover": True}, "permessage-deflate", (15, 15, True, False)),
    ({"server_no_context_takeover": True}, "permessage-deflate; server_no_context_takeover", (15, 15, False, True)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=10", (15, 10, False, False)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=8", (15, 8, False, False)),
]


@pytest.mark.parametrize(("config", "response", "expected"), CLIENT_ACCEPT_CASES)
def test_client_accept(config: dict[str, object], response: str, expected: tuple[int, int, bool, bool]) -> None:
    extension = ClientPerMessageDeflateFactory(**config).accept(params_of(response))  # type: ignore[arg-type]
    assert not extension.is_server
    assert (
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
    ) == expected


CLIENT_REJECT_CASES = [
    ({}, "permessage-deflate; client_max_window_bits"),  # no value in a response
    ({}, "permessage-deflate; foo=1"),
    ({}, "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
    ({}, "permessage-deflate; server_max_window_bits=16"),
    ({}, "permessage-deflate; client_no_context_takeover=yes"),
    ({"client_max_window_bits": None}, "permessage-deflate; client_max_window_bits=10"),  # not offered
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=11"),  # larger than offered
    ({"server_max_window_bits": 10}, "permessage-deflate"),  # our request ignored
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=12"),  # larger than offered
    ({"server_no_context_takeover": True}, "permessage-deflate"),  # our request ignored
]


@pytest.mark.parametrize(("config", "response"), CLIENT_REJECT_CASES)
def test_client_rejects_response(config: dict[str, object], response: str) -> None:
    with pytest.raises(HandshakeError):
        ClientPerMessageDeflateFactory(**config).accept(params_of(response))  # type: ignore[arg-type]


# ---------------------------------------------------------------- through the opening handshake


def deflate_upgrade_request(*extension_headers: str) -> h11.Request:
    headers = [
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    headers += [("Sec-WebSocket-Extensions", value) for value in extension_headers]
    return h11.Request(method="GET", target="/", headers=headers)


def response_extensions(response: h11.InformationalResponse | h11.Response) -> list[bytes]:
    return [value for name, value in response.headers if name == b"sec-websocket-extensions"]


@pytest.mark.parametrize("offer", MALFORMED_OFFERS)
def test_handshake_with_a_malformed_offer_is_101_without_the_extension(offer: str) -> None:
    result = server_handshake(deflate_upgrade_request(offer), extensions=[ServerPerMessageDeflateFactory()])
    assert isinstance(result, HandshakeAccepted)
    assert result.response.status_code == 101
    assert response_extensions(result.response) == []
    assert result.extensions == [] and not result.connection.extensions


def test_handshake_uses_the_next_offer_after_a_malformed_one() -> None:
    request = deflate_upgrade_request("permessage-deflate; bogus=1", "permessage-deflate; client_max_window_bits")
    result = server_handshake(request, extensions=[ServerPerMessageDeflateFactory()])
    assert isinstance(result, HandshakeAccepted)
    assert response_extensions(result.response) == [b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]
    assert [type(extension) for extension in result.extensions] == [PerMessageDeflate]


def test_handshake_with_a_malformed_offer_is_400_when_strict() -> None:
    factory = ServerPerMessageDeflateFactory(reject_malformed_offers=True)
    result = server_handshake(deflate_upgrade_request("permessage-deflate; server_max_window_bits=16"), extensions=[factory])
    assert isinstance(result, HandshakeRejected)
    assert result.response.status_code == 400
    assert "server_max_window_bits" in str(result.error)


@pytest.mark.parametrize(
    "header_value",
    [
        "permessage-deflate;",  # parameter missing after ';'
        "permessage-deflate; =12",  # parameter without a name
        'permessage-deflate; client_max_window_bits="10',  # unterminated quoted string
        "permessage-deflate; client_max_window_bits=1 0",  # space inside a value
        "permessage deflate",  # not a token list
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_handshake_with_an_unparseable_extensions_header_is_400(header_value: str, strict: bool) -> None:
    # A grammar error (RFC 6455 section 9.1) is not an offer that can be declined.
    factory = ServerPerMessageDeflateFactory(reject_malformed_offers=strict)
    result = server_handshake(deflate_upgrade_request(header_value), extensions=[factory])
    assert isinstance(result, HandshakeRejected)
    assert result.response.status_code == 400


@pytest.mark.parametrize(("config", "response"), CLIENT_REJECT_CASES)
def test_client_handshake_fails_on_a_bad_deflate_response(config: dict[str, object], response: str) -> None:
    # RFC 7692 section 7.1: the client MUST fail the connection; there is no "decline".
    handshake = ClientHandshake("example.com", extensions=[ClientPerMessageDeflateFactory(**config)])  # type: ignore[arg-type]
    reply = h11.InformationalResponse(
        status_code=101,
        headers=[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", compute_accept(handshake.key)),
            ("Sec-WebSocket-Extensions", response),
        ],
    )
    with pytest.raises(HandshakeError):
        handshake.receive_response(reply)


def test_client_handshake_accepts_a_good_deflate_response() -> None:
    # The counterpart of the test above, so that it cannot pass for a wrong reason.
    handshake = ClientHandshake("example.com", extensions=[ClientPerMessageDeflateFactory()])
    reply = h11.InformationalResponse(
        status_code=101,
        headers=[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", compute_accept(handshake.key)),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=12"),
        ],
    )
    accepted = handshake.receive_response(reply)
    assert [type(extension) for extension in accepted.extensions] == [PerMessageDeflate]


@pytest.mark.parametrize(("server_config", "client_config"), [
    ({}, {}),
    ({"server_no_context_takeover": True, "client_no_context_takeover": True}, {}),
    ({}, {"server_max_window_bits": 8, "client_max_window_bits": 8}),
    ({"server_max_window_bits": 15, "client_max_window_bits": None, "mem_level": 8}, {"client_max_window_bits": None}),
    ({}, {"server_no_context_takeover": True, "client_max_window_bits": 9}),
])
def test_our_client_and_server_round_trip(server_config: dict[str, object], client_config: dict[str, object]) -> None:
    server_ext, client_ext = pair(ServerPerMessageDeflateFactory(**server_config), ClientPerMessageDeflateFactory(**client_config))  # type: ignore[arg-type]
    for seed in range(6):
        payload = json_text(500 + 1500 * seed, seed)
        assert deliver(server_ext, client_ext, payload, fragments=1 + seed % 3) == payload
        assert deliver(client_ext, server_ext, payload, fragments=1 + seed % 2) == payload


# ---------------------------------------------------------------- window bits 8


def decode_one_byte_at_a_time(decompressor: "zlib._Decompress", data: bytes) -> bytes:
    """Output limited to one byte per call: every back-reference must come from the
    decompressor's window, so a distance beyond it raises zlib.error."""
    out = bytearray()
    pending = data
    while True:
        chunk = decompressor.decompress(pending, 1)
        out += chunk
        pending = decompressor.unconsumed_tail
        if not chunk and not pending:
            return bytes(out)


def test_window_bits_8_compressor_output_fits_an_8_bit_window() -> None:
    server_ext = PerMessageDeflate(is_server=True, local_max_window_bits=8, compression_level=9, mem_level=9, threshold=0)
    receiver = zlib.decompressobj(wbits=-8)
    for seed in range(8):
        payload = json_text(3000, seed)
        wire, rsv = server_ext.encode_message(payload, 1, None)
        assert rsv == 0x4
        assert decode_one_byte_at_a_time(receiver, wire + b"\x00\x00\xff\xff") == payload


def test_window_check_can_fail() -> None:
    # The check above is meaningful: a 10-bit compressor's output breaks an 8-bit window.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -10, 9)
    receiver = zlib.decompressobj(wbits=-8)
    with pytest.raises(zlib.error):
        for seed in range(8):
            payload = json_text(3000, seed)
            decode_one_byte_at_a_time(receiver, compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))


# ---------------------------------------------------------------- framing rules


def test_rfc7692_examples_decode() -> None:
    # RFC 7692 section 7.2.3.1 / 7.2.3.2: "Hello" compressed, then again with takeover.
    receiver = PerMessageDeflate(is_server=False)
    assert receiver.decode_fragment(bytes.fromhex("f248cdc9c90700"), True, 0x4, True, LIMIT) == b"Hello"
    assert receiver.decode_fragment(bytes.fromhex("f200110000"), True, 0x4, True, LIMIT) == b"Hello"
    # 7.2.3.1 fragmented: "Hello" in two frames.
    receiver = PerMessageDeflate(is_server=False)
    assert receiver.decode_fragment(bytes.fromhex("f248cd"), True, 0x4, False, LIMIT) == b"He"
    assert receiver.decode_fragment(bytes.fromhex("c9c90700"), False, 0x4, True, LIMIT - 2) == b"llo"
    # 7.2.3.3: BFINAL block; 7.2.3.4: stored block; 7.2.3.6: empty message.
    receiver = PerMessageDeflate(is_server=False)
    assert receiver.decode_fragment(bytes.fromhex("f348cdc9c90700"), True, 0x4, True, LIMIT) == b"Hello"
    assert receiver.decode_fragment(bytes.fromhex("0005 00fa ff48 656c 6c6f 00".replace(" ", "")), True, 0x4, True, LIMIT) == b"Hello"
    assert receiver.decode_fragment(b"\x00", True, 0x4, True, LIMIT) == b""


def test_bfinal_message_then_context_takeover_message() -> None:
    # A sender that ends a message with BFINAL=1 (RFC 7692 7.2.3.3) and keeps its window.
    payload = json_text(2000, 1)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(payload) + compressor.flush(zlib.Z_FINISH)
    receiver = PerMessageDeflate(is_server=True)
    assert receiver.decode_fragment(first, True, 0x4, True, LIMIT) == payload
    # The next message refers back into the previous one's window.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=payload)
    second = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(second) < 50
    assert receiver.decode_fragment(second, True, 0x4, True, LIMIT) == payload


@pytest.mark.parametrize("garbage_in_next_fragment", [False, True])
def test_data_after_end_of_stream_is_a_protocol_error(garbage_in_next_fragment: bool) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    ended = compressor.compress(b"Hello") + compressor.flush(zlib.Z_FINISH)
    receiver = PerMessageDeflate(is_server=True)
    with pytest.raises(ProtocolError) as info:
        if garbage_in_next_fragment:
            receiver.decode_fragment(ended, True, 0x4, False, LIMIT)
            receiver.decode_fragment(b"\x01\x02", False, 0x4, True, LIMIT)
        else:
            receiver.decode_fragment(ended + b"\x01", True, 0x4, True, LIMIT)
    assert info.value.code == 1002


def test_corrupt_data_is_a_protocol_error() -> None:
    receiver = PerMessageDeflate(is_server=True)
    with pytest.raises(ProtocolError) as info:
        receiver.decode_fragment(b"\xff\xff\xff\xff", True, 0x4, True, LIMIT)
    assert info.value.code == 1002


@pytest.mark.parametrize("fragments", [1, 2, 3, 7, 50])
def test_fragmented_compressed_message(fragments: int) -> None:
    sender = PerMessageDeflate(is_server=True, threshold=0)
    receiver = PerMessageDeflate(is_server=False)
    for seed in range(3):
        payload = json_text(4096, seed)
        assert deliver(sender, receiver, payload, fragments) == payload


def test_fragments_through_the_frame_parser(sp: object) -> None:
    # Fragment a compressed message into real frames: RSV1 on the first only, and the
    # parser (either speedups implementation) accepts exactly that.
    sender = PerMessageDeflate(is_server=True, threshold=0)
    receiver = PerMessageDeflate(is_server=False)
    payload = json_text(5000)
    wire, rsv = sender.encode_message(payload, 1, None)
    third = len(wire) // 3
    parts = [wire[:third], wire[third : 2 * third], wire[2 * third :]]
    stream = b"".join(
        _speedups.encode_frame(1 if i == 0 else 0, part, i == 2, rsv if i == 0 else 0) for i, part in enumerate(parts)
    )
    frames, consumed, error = _speedups.parse_frames(stream, False, -1, 0x4, True)
    assert error is None and consumed == len(stream)
    assert [frame[2] for frame in frames] == [0x4, 0, 0]
    out = b""
    for index, (_, fin, _, frame_payload) in enumerate(frames):
        assert isinstance(frame_payload, bytes)  # RSV1 frames are never pre-decoded to str
        out += receiver.decode_fragment(frame_payload, index == 0, 0x4, fin, LIMIT - len(out))
    assert out == payload
    # RSV1 on a continuation frame is refused by the parser.
    bad = _speedups.encode_frame(1, parts[0], False, 0x4) + _speedups.encode_frame(0, parts[1], True, 0x4)
    _, _, error = _speedups.parse_frames(bad, False, -1, 0x4, True)
    assert error is not None and error[0] == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frames_are_never_compressed(opcode: int) -> None:
    extension = PerMessageDeflate(is_server=True, threshold=0)
    assert extension.encode_message(b"x" * 100, opcode, True) == (b"x" * 100, 0)
    assert extension.encode_message(b"x" * 100, opcode, None) == (b"x" * 100, 0)


@pytest.mark.parametrize(("sender_nct", "receiver_knows_nct"), [(False, False), (True, True), (True, False)])
def test_context_takeover_over_several_messages(sender_nct: bool, receiver_knows_nct: bool) -> None:
    sender = PerMessageDeflate(is_server=True, local_no_context_takeover=sender_nct, threshold=0)
    receiver = PerMessageDeflate(is_server=False, remote_no_context_takeover=receiver_knows_nct)
    payload = json_text(3000, 7)
    sizes = []
    for _ in range(4):
        wire, rsv = sender.encode_message(payload, 1, None)
        sizes.append(len(wire))
        assert receiver.decode_fragment(wire, True, rsv, True, LIMIT) == payload
    if sender_nct:
        assert len(set(sizes)) == 1  # every message compressed from an empty window
    else:
        assert sizes[1] < sizes[0] // 10  # the repeat refers back to the previous message
    # State kept only when it carries over.
    assert (sender._compressor is None) == sender_nct
    assert (receiver._decompressor is None) == receiver_knows_nct


def test_receiver_without_takeover_rejects_a_sender_that_uses_it() -> None:
    sender = PerMessageDeflate(is_server=True, threshold=0)  # keeps its window
    receiver = PerMessageDeflate(is_server=False, remote_no_context_takeover=True)
    payload = json_text(3000, 3)
    first, rsv = sender.encode_message(payload, 1, None)
    assert receiver.decode_fragment(first, True, rsv, True, LIMIT) == payload
    second, rsv = sender.encode_message(payload, 1, None)
    with pytest.raises(ProtocolError):
        receiver.decode_fragment(second, True, rsv, True, LIMIT)


# ---------------------------------------------------------------- bounded inflate


_BOMB_SIZE = 64 << 20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    data = b"".join(compressor.compress(zeros) for _ in range(_BOMB_SIZE >> 20))
    return (data + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("fragments", [1, 4])
def test_decompression_bomb_closes_with_1009_in_bounded_memory(bomb: bytes, fragments: int) -> None:
    assert len(bomb) < 100_000  # 64 MiB of zeros
    receiver = PerMessageDeflate(is_server=True)
    step = -(-len(bomb) // fragments)
    chunks = [bomb[i : i + step] for i in range(0, len(bomb), step)]
    received = 0
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            for index, chunk in enumerate(chunks):
                received += len(receiver.decode_fragment(chunk, index == 0, 0x4, index == len(chunks) - 1, LIMIT - received))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == 1009
    assert peak < _BOMB_SIZE // 10
    assert peak < 4 * LIMIT  # bounded by the message limit, not the bomb


@pytest.mark.parametrize("fragments", [1, 3])
@pytest.mark.parametrize("limit", [1, 1000, 4096, 65536])
def test_exactly_at_the_limit_is_delivered_one_more_byte_is_not(fragments: int, limit: int) -> None:
    payload = json_text(limit, limit)
    for sender_level in (0, 1, 9):  # stored blocks, fast, best: different block shapes
        sender = PerMessageDeflate(is_server=True, threshold=0, compression_level=sender_level)
        wire, _ = sender.encode_message(payload, 2, None)
        step = max(1, -(-len(wire) // fragments))
        chunks = [wire[i : i + step] for i in range(0, len(wire), step)]
        for budget, fits in ((limit, True), (limit - 1, False)):
            receiver = PerMessageDeflate(is_server=False)
            out = b""
            try:
                for index, chunk in enumerate(chunks):
                    out += receiver.decode_fragment(chunk, index == 0, 0x4, index == len(chunks) - 1, budget - len(out))
            except ProtocolError as exc:
                assert not fits and exc.code == 1009
            else:
                assert fits and out == payload


def test_exact_limit_with_a_trailing_empty_block_in_the_last_fragment() -> None:
    # The output cap is reached while input is left that produces no output (a sync
    # flush's empty stored block): still exactly at the limit, still delivered.
    payload = b"a" * 5000
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    wire = body + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]  # another flush, minus its tail
    receiver = PerMessageDeflate(is_server=True)
    assert receiver.decode_fragment(wire, True, 0x4, True, len(payload)) == payload
    receiver = PerMessageDeflate(is_server=True)
    with pytest.raises(ProtocolError):
        receiver.decode_fragment(wire, True, 0x4, True, len(payload) - 1)


def test_zero_budget_empty_message() -> None:
    receiver = PerMessageDeflate(is_server=True)
    assert receiver.decode_fragment(b"\x00", True, 0x4, True, 0) == b""
    with pytest.raises(ProtocolError):
        receiver.decode_fragment(bytes.fromhex("f248cdc9c90700"), True, 0x4, True, 0)


# ---------------------------------------------------------------- threshold and opt-out


@pytest.mark.parametrize(
    ("size", "compress", "expect_compressed"),
    [
        (1023, None, False),
        (1024, None, True),
        (5000, None, True),
        (5000, False, False),
        (10, True, True),
        (0, True, True),
    ],
)
def test_threshold_and_opt_out(size: int, compress: Optional[bool], expect_compressed: bool) -> None:
    sender = PerMessageDeflate(is_server=True)
    receiver = PerMessageDeflate(is_server=False)
    payload = json_text(size)
    wire, rsv = sender.encode_message(payload, 1, compress)
    if expect_compressed:
        assert rsv == 0x4
        assert receiver.decode_fragment(wire, True, rsv, True, LIMIT) == payload
    else:
        assert (wire, rsv) == (payload, 0)


def test_uncompressed_message_between_compressed_ones_keeps_context() -> None:
    sender = PerMessageDeflate(is_server=True)
    receiver = PerMessageDeflate(is_server=False)
    big = json_text(4000, 1)
    assert deliver(sender, receiver, big) == big
    assert deliver(sender, receiver, b"small") == b"small"
    assert deliver(sender, receiver, big, compress=False) == big
    assert deliver(sender, receiver, big) == big


# ---------------------------------------------------------------- prepared messages


def parse_one(frame: bytes) -> tuple[int, bool, int, bytes]:
    frames, consumed, error = _speedups.parse_frames(frame, False, -1, 0x4, False)
    assert error is None and consumed == len(frame) and len(frames) == 1
    return frames[0]  # type: ignore[return-value]


def test_prepared_message_is_shared_without_context_takeover(sp: object) -> None:
    factory = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
    client_factory = ClientPerMessageDeflateFactory()
    pairs = [pair(factory, client_factory) for _ in range(5)]
    payload = json_text(4096).decode()
    prepared = PreparedMessage(payload)
    frames = [prepared.frames_for(server_ext) for server_ext, _ in pairs]
    assert all(frame is frames[0] for frame in frames)  # compressed and framed once
    for round_ in range(3):
        for server_ext, client_ext in pairs:
            opcode, fin, rsv, body = parse_one(prepared.frames_for(server_ext))
            assert (opcode, fin, rsv) == (1, True, 0x4)
            assert client_ext.decode_fragment(body, True, rsv, fin, LIMIT) == payload.encode()
        # Receivers keep working with ordinary messages in between.
        for server_ext, client_ext in pairs:
            assert deliver(server_ext, client_ext, payload.encode()) == payload.encode()


def test_prepared_message_falls_back_per_connection_with_context_takeover() -> None:
    shared_factory = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
    takeover_factory = ServerPerMessageDeflateFactory()
    wide_factory = ServerPerMessageDeflateFactory(server_no_context_takeover=True, server_max_window_bits=15, mem_level=8)
    client_factory = ClientPerMessageDeflateFactory()
    pairs = [pair(f, client_factory) for f in (shared_factory, takeover_factory, takeover_factory, wide_factory, shared_factory)]
    payload = json_text(4096, 5)
    prepared = PreparedMessage(payload)
    for _ in range(3):
        for server_ext, client_ext in pairs:
            opcode, fin, rsv, body = parse_one(prepared.frames_for(server_ext))
            assert (opcode, rsv) == (2, 0x4)
            assert client_ext.decode_fragment(body, True, rsv, fin, LIMIT) == payload
    # context takeover: later copies shrink (window carries over); shared: identical
    assert prepared.frames_for(pairs[0][0]) is prepared.frames_for(pairs[4][0])
    # one cache entry per (window bits, memLevel, level) variant; takeover connections bypass it
    assert sorted(prepared._compressed_frames) == [(12, 5, 6), (15, 8, 6)]


def test_prepared_message_small_plain_and_no_extension() -> None:
    prepared = PreparedMessage(b"tiny")
    extension = ServerPerMessageDeflateFactory(server_no_context_takeover=True).negotiate([[]])
    assert extension is not None
    plain = _speedups.encode_frame(2, b"tiny")
    assert prepared.frames_for(extension[1]) == plain  # below the threshold
    assert prepared.frames_for(None) == plain
    forced = PreparedMessage(b"tiny", compress=True).frames_for(extension[1])
    assert parse_one(forced)[2] == 0x4
    opted_out = PreparedMessage(json_text(5000), compress=False).frames_for(extension[1])
    assert parse_one(opted_out)[2] == 0


def test_prepared_message_refuses_client_side() -> None:
    client_ext = ClientPerMessageDeflateFactory().accept([])
    with pytest.raises(ValueError):
        PreparedMessage(json_text(5000)).frames_for(client_ext)
    with pytest.raises(ValueError):
        PreparedMessage(b"x", opcode=9)
    with pytest.raises(TypeError):
        PreparedMessage(b"x").frames_for(object())  # type: ignore[arg-type]


def test_prepared_message_with_connections() -> None:
    from volleyio.websocket.connection import Role, WebSocketConnection

    result = ServerPerMessageDeflateFactory(server_no_context_takeover=True).negotiate([[]])
    assert result is not None
    payload = json_text(3000)
    prepared = PreparedMessage(payload)
    server = WebSocketConnection(Role.SERVER, extensions=[result[1]])
    assert prepared.frames_for(server) is prepared.frames_for(result[1])
    assert prepared.frames_for(WebSocketConnection(Role.SERVER)) == _speedups.encode_frame(2, payload)
    with pytest.raises(ValueError):
        prepared.frames_for(WebSocketConnection(Role.CLIENT))


@pytest.mark.parametrize("limit", [1, 999, 4096])
def test_overflow_is_reported_by_the_fragment_that_overflows(limit: int) -> None:
    # Budget exceeded inside a non-final fragment: 1009 right there (no truncated
    # output handed back, nothing deferred to a later fragment or the tail).
    payload = json_text(limit + 1, limit)
    wire, _ = PerMessageDeflate(is_server=True, threshold=0).encode_message(payload, 2, None)
    receiver = PerMessageDeflate(is_server=False)
    with pytest.raises(ProtocolError) as info:
        receiver.decode_fragment(wire, True, 0x4, False, limit)
    assert info.value.code == 1009
    receiver = PerMessageDeflate(is_server=False)
    assert receiver.decode_fragment(wire, True, 0x4, False, limit + 1) == payload
    assert receiver.decode_fragment(b"", False, 0x4, True, 0) == b""


# ---------------------------------------------------------------- property: any split, any settings

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages=st.lists(
        st.one_of(st.binary(max_size=3000), st.text(alphabet="abc {}\":,0123", max_size=6000).map(str.encode)),
        min_size=1,
        max_size=5,
    ),
    split_seed=st.integers(0, 2**32),
    server_bits=st.integers(8, 15),
    client_bits=st.integers(8, 15),
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    threshold=st.sampled_from([0, 1024]),
)
def test_round_trip_any_fragmentation_any_settings(
    messages: list[bytes], split_seed: int, server_bits: int, client_bits: int, server_nct: bool, client_nct: bool, threshold: int
) -> None:
    server_factory = ServerPerMessageDeflateFactory(server_max_window_bits=server_bits, client_max_window_bits=client_bits, threshold=threshold)
    client_factory = ClientPerMessageDeflateFactory(server_no_context_takeover=server_nct, client_no_context_takeover=client_nct, threshold=threshold)
    server_ext, client_ext = pair(server_factory, client_factory)
    rnd = random.Random(split_seed)
    for payload in messages:
        for sender, receiver in ((server_ext, client_ext), (client_ext, server_ext)):
            wire, rsv = sender.encode_message(payload, 2, None)
            if not rsv:
                assert wire == payload
                continue
            cuts = sorted(rnd.sample(range(len(wire) + 1), min(len(wire) + 1, rnd.randint(0, 4))))
            bounds = [0, *cuts, len(wire)]
            chunks = [wire[a:b] for a, b in zip(bounds, bounds[1:])]  # empty fragments included
            out = b""
            for index, chunk in enumerate(chunks):
                out += receiver.decode_fragment(chunk, index == 0, rsv, index == len(chunks) - 1, len(payload) - len(out))
            assert out == payload  # budget exactly the payload size: always delivered
