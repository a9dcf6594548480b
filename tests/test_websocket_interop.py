"""Sans-I/O interop with the `websockets` library's protocol objects, in both directions.

Bytes only: our handshake + frames go into websockets' ServerProtocol / ClientProtocol
and its output comes back into ours. No sockets, nothing timed.
"""

from __future__ import annotations

from collections.abc import Iterator

import h11
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from volleyio.websocket import (
    BinaryMessage,
    ClientHandshake,
    CloseReceived,
    ConnectionClosed,
    ConnectionState,
    HandshakeAccepted,
    Ping,
    Pong,
    TextMessage,
    WebSocketConnection,
    server_handshake,
)

pytestmark = pytest.mark.interop


def drain(protocol: ClientProtocol | ServerProtocol) -> tuple[bytes, bool]:
    """All bytes websockets wants to write, and whether it asked to half-close (EOF)."""
    writes = protocol.data_to_send()
    return b"".join(writes), any(chunk == b"" for chunk in writes)


class OursClientTheirsServer:
    """Our ClientHandshake/WebSocketConnection against websockets.server.ServerProtocol."""

    def __init__(self, subprotocols: list[str] | None = None, offer: list[str] | None = None) -> None:
        self.theirs = ServerProtocol(subprotocols=subprotocols)  # type: ignore[arg-type]
        handshake = ClientHandshake("localhost:8765", "/interop", subprotocols=offer or [])
        http = h11.Connection(h11.CLIENT)
        self.theirs.receive_data(http.send(handshake.request))
        (request,) = self.theirs.events_received()
        assert isinstance(request, WsRequest)
        response = self.theirs.accept(request)
        assert response.status_code == 101, response.body
        self.theirs.send_response(response)
        wire, eof = drain(self.theirs)
        assert not eof
        http.receive_data(wire)
        informational = http.next_event()
        assert isinstance(informational, h11.InformationalResponse)
        self.result = handshake.receive_response(informational)
        self.ours: WebSocketConnection = self.result.connection
        trailing, _ = http.trailing_data
        if trailing:
            self.ours.receive_data(trailing)
        assert self.theirs.state is State.OPEN

    def ours_to_theirs(self) -> list[Frame]:
        self.theirs.receive_data(self.ours.data_to_send())
        return [event for event in self.theirs.events_received() if isinstance(event, Frame)]

    def theirs_to_ours(self) -> tuple[list[object], bool]:
        wire, eof = drain(self.theirs)
        self.ours.receive_data(wire)
        if eof:
            self.ours.receive_data(b"")
        return list(self.ours.events()), eof


class TheirsClientOursServer:
    """websockets.client.ClientProtocol against our server_handshake/WebSocketConnection."""

    def __init__(self, subprotocols: list[str] | None = None, offer: list[str] | None = None, max_size: int = 2**20) -> None:
        self.theirs = ClientProtocol(parse_uri("ws://localhost:8765/interop"), subprotocols=offer, max_size=max_size)  # type: ignore[arg-type]
        self.theirs.send_request(self.theirs.connect())
        http = h11.Connection(h11.SERVER)
        wire, _ = drain(self.theirs)
        http.receive_data(wire)
        request = http.next_event()
        assert isinstance(request, h11.Request)
        result = server_handshake(request, subprotocols=subprotocols or [])
        assert isinstance(result, HandshakeAccepted)
        self.result = result
        self.ours: WebSocketConnection = result.connection
        self.theirs.receive_data(http.send(result.response))
        (response,) = self.theirs.events_received()
        assert isinstance(response, WsResponse)
        assert self.theirs.state is State.OPEN, self.theirs.handshake_exc

    def ours_to_theirs(self) -> tuple[list[Frame], bool]:
        self.theirs.receive_data(self.ours.data_to_send())
        if self.ours.closed:
            self.theirs.receive_eof()
        return [event for event in self.theirs.events_received() if isinstance(event, Frame)], self.ours.closed

    def theirs_to_ours(self) -> list[object]:
        wire, _ = drain(self.theirs)
        self.ours.receive_data(wire)
        return list(self.ours.events())


@pytest.fixture(params=["ours-client", "ours-server"])
def pair(request: pytest.FixtureRequest) -> Iterator[OursClientTheirsServer | TheirsClientOursServer]:
    yield OursClientTheirsServer() if request.param == "ours-client" else TheirsClientOursServer()


def _their_frames(pair: OursClientTheirsServer | TheirsClientOursServer) -> list[Frame]:
    if isinstance(pair, OursClientTheirsServer):
        return pair.ours_to_theirs()
    return pair.ours_to_theirs()[0]


def _our_events(pair: OursClientTheirsServer | TheirsClientOursServer) -> list[object]:
    if isinstance(pair, OursClientTheirsServer):
        return pair.theirs_to_ours()[0]
    return pair.theirs_to_ours()


def test_subprotocol_negotiation_both_ways() -> None:
    a = OursClientTheirsServer(subprotocols=["v2", "v1"], offer=["v1", "v2"])
    assert a.result.subprotocol == a.theirs.subprotocol == "v2"
    b = TheirsClientOursServer(subprotocols=["v2", "v1"], offer=["v1", "v2"])
    assert b.result.subprotocol == b.theirs.subprotocol == "v2"


@pytest.mark.parametrize("text", ["", "hello", "héllo wörld ✓ 𝄞", "x" * 70000])
def test_text_ours_to_theirs(pair: OursClientTheirsServer | TheirsClientOursServer, text: str) -> None:
    pair.ours.send_text(text)
    (frame,) = _their_frames(pair)
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == text.encode()


@pytest.mark.parametrize("data", [b"", b"\x00\xff" * 3, bytes(range(256)) * 300])
def test_binary_ours_to_theirs(pair: OursClientTheirsServer | TheirsClientOursServer, data: bytes) -> None:
    pair.ours.send_binary(data)
    (frame,) = _their_frames(pair)
    assert frame.opcode is Opcode.BINARY and frame.data == data


def test_fragmented_ours_to_theirs(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    pair.ours.send_text("fragmented €uro message", fragment_size=5)
    frames = _their_frames(pair)
    assert [f.opcode for f in frames] == [Opcode.TEXT] + [Opcode.CONT] * (len(frames) - 1)
    assert [f.fin for f in frames] == [False] * (len(frames) - 1) + [True]
    assert b"".join(f.data for f in frames).decode() == "fragmented €uro message"


@pytest.mark.parametrize("text", ["", "hello", "héllo wörld ✓ 𝄞", "x" * 70000])
def test_text_theirs_to_ours(pair: OursClientTheirsServer | TheirsClientOursServer, text: str) -> None:
    pair.theirs.send_text(text.encode())
    assert _our_events(pair) == [TextMessage(text)]


def test_binary_theirs_to_ours(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    pair.theirs.send_binary(b"\x00\x01\x02" * 1000)
    assert _our_events(pair) == [BinaryMessage(b"\x00\x01\x02" * 1000)]


def test_fragmented_with_interleaved_ping_theirs_to_ours(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    pair.theirs.send_text("€".encode()[:1], fin=False)
    pair.theirs.send_ping(b"mid")
    pair.theirs.send_continuation("€".encode()[1:], fin=False)
    pair.theirs.send_continuation(b" done", fin=True)
    assert _our_events(pair) == [Ping(b"mid"), TextMessage("€ done")]
    # Our automatic pong reaches them.
    frames = _their_frames(pair)
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.PONG, b"mid")]


def test_ping_ours_pong_theirs(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    pair.ours.send_ping(b"\x01\x02")
    (frame,) = _their_frames(pair)
    assert frame.opcode is Opcode.PING and frame.data == b"\x01\x02"
    assert _our_events(pair) == [Pong(b"\x01\x02")]


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "going away"), (4000, "app-defined ✓"), (1011, "x" * 123)])
def test_close_initiated_by_ours(pair: OursClientTheirsServer | TheirsClientOursServer, code: int, reason: str) -> None:
    pair.ours.close(code, reason)
    assert pair.ours.state is ConnectionState.CLOSING
    frames = _their_frames(pair)
    close_frame = frames[-1]
    assert close_frame.opcode is Opcode.CLOSE
    assert Close.parse(close_frame.data) == Close(code, reason)
    assert pair.theirs.close_rcvd == Close(code, reason)
    events = _our_events(pair)
    assert events[0] == CloseReceived(code, reason)  # websockets echoes the whole close payload
    assert events[-1] == ConnectionClosed(code, reason, True)
    assert pair.ours.closed


@pytest.mark.parametrize("code, reason", [(1000, "bye"), (1008, "policy"), (3001, "")])
def test_close_initiated_by_theirs(pair: OursClientTheirsServer | TheirsClientOursServer, code: int, reason: str) -> None:
    pair.theirs.send_close(code, reason)
    events = _our_events(pair)
    assert events[0] == CloseReceived(code, reason)
    frames = _their_frames(pair)
    assert frames[-1].opcode is Opcode.CLOSE and Close.parse(frames[-1].data).code == code
    assert pair.theirs.state in (State.CLOSING, State.CLOSED)
    if isinstance(pair, OursClientTheirsServer):
        # Their server closes TCP after the handshake; our client sees EOF and is done.
        events, eof = pair.theirs_to_ours()
        assert eof and events == [ConnectionClosed(code, reason, True)]
    else:
        # Our server closes TCP first; their client then reaches CLOSED.
        assert pair.ours.closed and events[-1] == ConnectionClosed(code, reason, True)
        assert pair.theirs.state is State.CLOSED


def test_empty_close_from_theirs(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    pair.theirs.send_close()
    assert _our_events(pair)[0] == CloseReceived(1005, "")
    frames = _their_frames(pair)
    assert frames[-1].opcode is Opcode.CLOSE and frames[-1].data == b""


def test_invalid_utf8_from_theirs_is_1007(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    # websockets sends whatever bytes it is given in a text frame.
    pair.theirs.send_text(b"ok", fin=False)
    pair.theirs.send_continuation(b"\xff", fin=False)
    _our_events(pair)
    assert pair.ours.close_sent is not None and pair.ours.close_sent.code == 1007
    frames = _their_frames(pair)
    assert Close.parse(frames[-1].data).code == 1007


def test_their_fail_on_our_oversized_message() -> None:
    pair = TheirsClientOursServer(max_size=10)
    pair.ours.send_binary(b"x" * 11)
    pair.ours_to_theirs()
    assert pair.theirs.close_sent is not None and pair.theirs.close_sent.code == 1009
    events = pair.theirs_to_ours()
    assert events[0] == CloseReceived(1009, pair.theirs.close_sent.reason)
    assert events[-1] == ConnectionClosed(1009, pair.theirs.close_sent.reason, True)


def test_many_messages_in_one_batch(pair: OursClientTheirsServer | TheirsClientOursServer) -> None:
    for i in range(200):
        pair.theirs.send_text(f"message {i}".encode())
    assert _our_events(pair) == [TextMessage(f"message {i}") for i in range(200)]
    for i in range(200):
        pair.ours.send_binary(i.to_bytes(2, "big"))
    assert [f.data for f in _their_frames(pair)] == [i.to_bytes(2, "big") for i in range(200)]
