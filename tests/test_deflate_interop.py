"""permessage-deflate interop with the ``websockets`` library (sans-I/O), both directions.

Extension level: websockets' factories negotiate with ours through the parameter
lists, and frames compressed by one side are decoded by the other. Connection level:
websockets' ``ClientProtocol`` / ``ServerProtocol`` against our ``server_handshake`` /
``ClientHandshake`` and ``WebSocketConnection``, bytes over h11 for the handshake.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import Any, Optional

import h11
import pytest
from websockets.client import ClientProtocol
from websockets.extensions import permessage_deflate as wsdeflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from volleyio.errors import ProtocolError
from volleyio.websocket.connection import WebSocketConnection
from volleyio.websocket.deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    PreparedMessage,
    ServerPerMessageDeflateFactory,
)
from volleyio.websocket.events import BinaryMessage, TextMessage
from volleyio.websocket.extensions import parse_extensions_header, serialize_extension
from volleyio.websocket.handshake import ClientHandshake, HandshakeAccepted, server_handshake

pytestmark = pytest.mark.interop

LIMIT = 1 << 20


def json_text(size: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        parts.append(f'{{"n":{rnd.randrange(10**5)},"room":"r{rnd.randrange(20)}","msg":"{rnd.choice(["hey", "hello world", "ok"])}"}}')
    return ("[" + ",".join(parts) + "]")[:size]


MESSAGES = [json_text(size, size) for size in (0, 5, 1023, 1024, 4096, 70000)] + ["\u00e9t\u00e9 " * 3000]

# (websockets client factory kwargs, our server factory kwargs)
CLIENT_SIDE_COMBOS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"compress_settings": {"memLevel": 5}}, {"server_no_context_takeover": True}),
    ({"server_no_context_takeover": True}, {}),
    ({"client_no_context_takeover": True}, {}),
    ({"server_max_window_bits": 10, "client_max_window_bits": 9}, {}),
    ({"server_max_window_bits": 8}, {}),  # our compressor runs at zlib 9 for a negotiated 8
    ({"client_max_window_bits": None}, {"server_max_window_bits": 15, "mem_level": 8}),
    ({}, {"client_no_context_takeover": True, "client_max_window_bits": 9}),
]

# (our client factory kwargs, websockets server factory kwargs)
SERVER_SIDE_COMBOS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({}, {"server_no_context_takeover": True, "client_no_context_takeover": True}),
    ({"client_max_window_bits": 10}, {}),
    ({}, {"server_max_window_bits": 9, "client_max_window_bits": 8}),
    ({"server_max_window_bits": 12, "server_no_context_takeover": True}, {}),
    ({"client_max_window_bits": None}, {"compress_settings": {"memLevel": 9}}),
]


def their_params(params: list[tuple[str, Optional[str]]]) -> list[tuple[str, Optional[str]]]:
    # Round-trip through the header text so both header codecs are exercised.
    return parse_extensions_header([serialize_extension("permessage-deflate", params)])[0][1]


def ours_then_theirs(ours: PerMessageDeflate, theirs: wsdeflate.PerMessageDeflate, text: str, fragments: int) -> str:
    wire, rsv = ours.encode_message(text.encode(), 1, None)
    if not rsv:
        return wire.decode()
    step = max(1, -(-len(wire) // fragments))
    chunks = [wire[i : i + step] for i in range(0, len(wire), step)] or [b""]
    out = b""
    for index, chunk in enumerate(chunks):
        frame = Frame(Opcode.TEXT if index == 0 else Opcode.CONT, chunk, fin=index == len(chunks) - 1, rsv1=index == 0)
        out += bytes(theirs.decode(frame, max_size=LIMIT).data)
    return out.decode()


def theirs_then_ours(theirs: wsdeflate.PerMessageDeflate, ours: PerMessageDeflate, text: str, fragments: int) -> str:
    data = text.encode()
    step = max(1, -(-len(data) // fragments))
    chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    out = b""
    for index, chunk in enumerate(chunks):
        # websockets compresses each fragment with its own sync flush: our decoder
        # must take the embedded 00 00 ff ff of non-final fragments in stride.
        frame = theirs.encode(Frame(Opcode.TEXT if index == 0 else Opcode.CONT, chunk, fin=index == len(chunks) - 1))
        assert frame.rsv1 == (index == 0)
        out += ours.decode_fragment(bytes(frame.data), index == 0, 0x4, frame.fin, LIMIT - len(out))
    return out.decode()


@pytest.mark.parametrize(("their_config", "our_config"), CLIENT_SIDE_COMBOS)
def test_their_client_our_server_extension_level(their_config: dict[str, Any], our_config: dict[str, Any]) -> None:
    their_factory = wsdeflate.ClientPerMessageDeflateFactory(**their_config)
    negotiated = ServerPerMessageDeflateFactory(**our_config).negotiate([their_params(list(their_factory.get_request_params()))])
    assert negotiated is not None
    response, ours = negotiated
    theirs = their_factory.process_response_params(parse_extensions_header([response])[0][1], [])
    for round_ in range(2):
        for fragments, text in enumerate(MESSAGES, start=1):
            assert ours_then_theirs(ours, theirs, text, fragments % 4 + 1) == text
            assert theirs_then_ours(theirs, ours, text, fragments % 3 + 1) == text


@pytest.mark.parametrize(("our_config", "their_config"), SERVER_SIDE_COMBOS)
def test_our_client_their_server_extension_level(our_config: dict[str, Any], their_config: dict[str, Any]) -> None:
    our_factory = ClientPerMessageDeflateFactory(**our_config)
    offer = parse_extensions_header([our_factory.offer()])[0][1]
    response_params, theirs = wsdeflate.ServerPerMessageDeflateFactory(**their_config).process_request_params(offer, [])
    ours = our_factory.accept(their_params(response_params))
    for round_ in range(2):
        for fragments, text in enumerate(MESSAGES, start=1):
            assert ours_then_theirs(ours, theirs, text, fragments % 4 + 1) == text
            assert theirs_then_ours(theirs, ours, text, fragments % 3 + 1) == text


def test_their_bomb_is_refused_by_us() -> None:
    theirs = wsdeflate.PerMessageDeflate(False, False, 15, 15)
    ours = PerMessageDeflate(is_server=True)
    frame = theirs.encode(Frame(Opcode.BINARY, bytes(LIMIT + 1)))
    with pytest.raises(ProtocolError) as info:
        ours.decode_fragment(bytes(frame.data), True, 0x4, True, LIMIT)
    assert info.value.code == 1009
    assert ours._decompressor is None  # freed right away
    theirs = wsdeflate.PerMessageDeflate(False, False, 15, 15)
    ours = PerMessageDeflate(is_server=True)
    frame = theirs.encode(Frame(Opcode.BINARY, bytes(LIMIT)))
    assert ours.decode_fragment(bytes(frame.data), True, 0x4, True, LIMIT) == bytes(LIMIT)


# ---------------------------------------------------------------- connection level


def our_server_accepts(client: ClientProtocol, factory: ServerPerMessageDeflateFactory) -> WebSocketConnection:
    """Run websockets' client handshake against our server handshake over h11."""
    request = client.connect()
    client.send_request(request)
    http = h11.Connection(h11.SERVER)
    http.receive_data(client.data_to_send()[0])
    event = http.next_event()
    assert isinstance(event, h11.Request)
    result = server_handshake(event, extensions=[factory])
    assert isinstance(result, HandshakeAccepted)
    client.receive_data(http.send(result.response))
    assert client.handshake_exc is None, client.handshake_exc
    (response,) = client.events_received()
    assert isinstance(response, Response)
    return result.connection


def their_server_accepts(factory: ClientPerMessageDeflateFactory, server: ServerProtocol) -> WebSocketConnection:
    handshake = ClientHandshake(host="127.0.0.1:8000", extensions=[factory])
    http = h11.Connection(h11.CLIENT)
    server.receive_data(http.send(handshake.request))
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    http.receive_data(server.data_to_send()[0])
    response = http.next_event()
    assert isinstance(response, h11.InformationalResponse)
    return handshake.receive_response(response).connection


def our_texts(connection: WebSocketConnection) -> list[str]:
    return [event.data for event in connection.events() if isinstance(event, TextMessage)]


def their_texts(protocol: ClientProtocol | ServerProtocol) -> list[str]:
    """Text messages among websockets' frame events, continuation frames joined."""
    texts: list[str] = []
    parts: list[bytes] = []
    for frame in protocol.events_received():
        if not isinstance(frame, Frame) or frame.opcode not in (Opcode.TEXT, Opcode.CONT):
            continue
        parts.append(bytes(frame.data))
        if frame.fin:
            texts.append(b"".join(parts).decode())
            parts = []
    assert not parts
    return texts


def test_websockets_client_refuses_client_max_window_bits_8() -> None:
    # websockets' own limitation (its compressor can't do 8), not ours: our server
    # only answers 8 when configured to (client_max_window_bits=8), so a server that
    # must talk to websockets clients should keep the default (12) or use >= 9.
    their_factory = wsdeflate.ClientPerMessageDeflateFactory()
    negotiated = ServerPerMessageDeflateFactory(client_max_window_bits=8).negotiate([their_params(list(their_factory.get_request_params()))])
    assert negotiated is not None
    from websockets.exceptions import NegotiationError

    # websockets >= 17 refuses the answer; 16 (the last for Python 3.10) accepts it and
    # then fails to create its compressor (zlib refuses wbits=8 for raw deflate).
    with pytest.raises((NegotiationError, ValueError)):
        their_factory.process_response_params(parse_extensions_header([negotiated[0]])[0][1], [])


@pytest.mark.parametrize(("their_config", "our_config"), CLIENT_SIDE_COMBOS)
def test_their_client_our_server_connection_level(their_config: dict[str, Any], our_config: dict[str, Any]) -> None:
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory(**their_config)])
    server = our_server_accepts(client, ServerPerMessageDeflateFactory(**our_config))
    assert [type(ext) for ext in server.extensions] == [PerMessageDeflate]
    for text in MESSAGES * 2:
        server.send_text(text)
        client.receive_data(server.data_to_send())
        assert their_texts(client) == [text]
        client.send_text(text.encode())
        server.receive_data(b"".join(client.data_to_send()))
        assert our_texts(server) == [text]
    assert server.failure is None


@pytest.mark.parametrize(("our_config", "their_config"), SERVER_SIDE_COMBOS)
def test_our_client_their_server_connection_level(our_config: dict[str, Any], their_config: dict[str, Any]) -> None:
    server = ServerProtocol(extensions=[wsdeflate.ServerPerMessageDeflateFactory(**their_config)])
    client = their_server_accepts(ClientPerMessageDeflateFactory(**our_config), server)
    assert [type(ext) for ext in client.extensions] == [PerMessageDeflate]
    for text in MESSAGES * 2:
        client.send_text(text, fragment_size=3000)
        server.receive_data(client.data_to_send())
        assert their_texts(server) == [text]
        server.send_text(text.encode())
        client.receive_data(b"".join(server.data_to_send()))
        assert our_texts(client) == [text]
    assert client.failure is None


def test_their_fragmented_compressed_messages_to_our_server() -> None:
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory()])
    server = our_server_accepts(client, ServerPerMessageDeflateFactory())
    text = json_text(20000, 3)
    parts = [text[i : i + 2500].encode() for i in range(0, len(text), 2500)]
    client.send_text(parts[0], fin=False)
    for part in parts[1:-1]:
        client.send_continuation(part, fin=False)
    client.send_continuation(parts[-1], fin=True)
    server.receive_data(b"".join(client.data_to_send()))
    assert our_texts(server) == [text]


def test_their_bomb_closes_our_connection_with_1009_in_bounded_memory() -> None:
    bomb_size = 64 << 20
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory()], max_size=None)
    server = our_server_accepts(client, ServerPerMessageDeflateFactory())
    client.send_binary(bytes(bomb_size))
    wire = b"".join(client.data_to_send())
    assert len(wire) < 200_000
    tracemalloc.start()
    try:
        server.receive_data(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.failure is not None and server.failure.code == 1009
    assert peak < bomb_size // 10
    # The close frame we queued carries 1009 back to websockets.
    client.receive_data(server.data_to_send())
    assert client.close_code == 1009 or any(
        isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE for frame in client.events_received()
    )


def test_unlimited_message_size_budget() -> None:
    # max_message_size=None makes the connection pass sys.maxsize; max_length + 1 must
    # not overflow zlib's Py_ssize_t.
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory()], max_size=None)
    request = client.connect()
    client.send_request(request)
    http = h11.Connection(h11.SERVER)
    http.receive_data(client.data_to_send()[0])
    event = http.next_event()
    assert isinstance(event, h11.Request)
    result = server_handshake(event, extensions=[ServerPerMessageDeflateFactory()], max_message_size=None)
    assert isinstance(result, HandshakeAccepted)
    client.receive_data(http.send(result.response))
    client.events_received()
    text = json_text(50000, 4)
    client.send_text(text.encode())
    result.connection.receive_data(b"".join(client.data_to_send()))
    assert our_texts(result.connection) == [text]


def test_prepared_message_to_their_clients() -> None:
    factories = [
        ServerPerMessageDeflateFactory(server_no_context_takeover=True),
        ServerPerMessageDeflateFactory(server_no_context_takeover=True),
        ServerPerMessageDeflateFactory(),  # context takeover: per-connection fallback
    ]
    peers = []
    for factory in factories:
        client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory()])
        peers.append((client, our_server_accepts(client, factory)))
    text = json_text(4096, 9)
    prepared = PreparedMessage(text)
    for _ in range(3):
        for client, server in peers:
            server.send_raw_frames(prepared.frames_for(server))
            client.receive_data(server.data_to_send())
            assert their_texts(client) == [text]
            server.send_text(text)  # ordinary sends stay in sync with the compressor
            client.receive_data(server.data_to_send())
            assert their_texts(client) == [text]


def test_threshold_and_opt_out_on_the_wire() -> None:
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/"), extensions=[wsdeflate.ClientPerMessageDeflateFactory()])
    server = our_server_accepts(client, ServerPerMessageDeflateFactory())
    big = json_text(5000, 1)
    cases = [
        (json_text(1023, 2), None, False),  # below the 1 KiB threshold
        (json_text(1024, 3), None, True),
        (big, None, True),
        (big, False, False),  # per-message opt-out
        (json_text(10, 4), True, True),  # forced
    ]
    for text, compress, compressed in cases:
        server.send_text(text, compress=compress)
        wire = server.data_to_send()
        assert bool(wire[0] & 0x40) == compressed  # RSV1
        client.receive_data(wire)
        assert their_texts(client) == [text]
    server.send_ping(b"p" * 100)
    wire = server.data_to_send()
    assert wire[0] == 0x89  # FIN + ping, no RSV bits
