"""Robustness target: HTTP heads and the WebSocket opening handshake, both roles.

Server side, as the front door reads a request (``trio/_server.py``): the bytes go in
random reads through ``RequestHeadGuard`` (414/431) and an ``h11.Connection`` with the
server's head limit; a parsed request becomes the ``Request`` the application sees
(and the ``EngineIORequest`` of the Engine.IO server, built from the same raw head),
then ``server_handshake`` runs with origin/subprotocol policies and permessage-deflate.
Client side: ``ClientHandshake.receive_response`` on the response h11 parses, and
``parse_response_head``. Plus ``parse_extensions_header`` and the deflate factories on
arbitrary header values. Findings:

* an exception other than the documented ones (``HandshakeError`` from the guard, the
  client's checks and the header parsers; ``h11.RemoteProtocolError`` from h11) -- and
  ``server_handshake`` must not raise at all;
* the ``Request`` / ``EngineIORequest`` an application sees disagrees with the request
  h11 validated (method, target, version, header names and values in order);
* ``server_handshake`` accepts without a correct 101 (``Sec-WebSocket-Accept``) or
  rejects with something other than a 4xx/5xx response.
"""

from __future__ import annotations

import base64
import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    import h11

    from volleyio.errors import HandshakeError
    from volleyio.trio import EngineIORequest, Request
    from volleyio.trio._http import parse_response_head
    from volleyio.websocket.deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
    from volleyio.websocket.extensions import parse_extensions_header
    from volleyio.websocket.handshake import (
        ClientHandshake,
        HandshakeAccepted,
        HandshakeRejected,
        RequestHeadGuard,
        compute_accept,
        server_handshake,
    )

from _harness import Finding, main

_MAX_HEAD = 32 * 1024  # trio/_server.py's h11 limit
_NAMES = [
    b"Host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"Origin",
    b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions", b"Content-Length", b"Transfer-Encoding",
    b"Cookie", b"X-Forwarded-For", b"Sec-WebSocket-Accept", b"host", b"UPGRADE",
]
_VALUES = {
    b"Host": [b"example.com", b"example.com:8080", b"[::1]:80", b"", b"a b"],
    b"Upgrade": [b"websocket", b"WebSocket", b"h2c, websocket", b"websocket, x"],
    b"Connection": [b"Upgrade", b"keep-alive, Upgrade", b"close", b"upgrade"],
    b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ==", b"AAAAAAAAAAAAAAAAAAAAAA==", b"short", b""],
    b"Sec-WebSocket-Version": [b"13", b"8", b"13, 8", b""],
    b"Origin": [b"http://example.com", b"https://example.com:443", b"null", b"http://evil.net", b"http://example.com:8080"],
    b"Sec-WebSocket-Protocol": [b"chat", b"chat, superchat", b"x y", b",,"],
    b"Sec-WebSocket-Extensions": [
        b"permessage-deflate", b"permessage-deflate; client_max_window_bits",
        b"permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
        b'permessage-deflate; client_max_window_bits="9"', b"permessage-deflate; x=1, permessage-deflate",
        b"foo, permessage-deflate;server_no_context_takeover;server_no_context_takeover",
    ],
    b"Content-Length": [b"0", b"5", b"-1", b"1, 1"],
    b"Transfer-Encoding": [b"chunked", b"gzip, chunked", b"identity"],
}


def _fuzz_line(fdp: atheris.FuzzedDataProvider, limit: int = 80) -> bytes:
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, limit))


def _request_bytes(fdp: atheris.FuzzedDataProvider) -> bytes:
    if fdp.ConsumeIntInRange(0, 4) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    eol = b"\r\n" if fdp.ConsumeIntInRange(0, 5) else fdp.PickValueInList([b"\n", b"\r", b"\n\r", b" \r\n"])
    method = fdp.PickValueInList([b"GET", b"GET", b"POST", b"HEAD", b"get", _fuzz_line(fdp, 8)])
    target = fdp.PickValueInList([b"/", b"/chat?room=1&x=%41", b"/engine.io/?EIO=4&transport=websocket", b"*",
                                  b"http://example.com/", _fuzz_line(fdp, 40)])
    version = fdp.PickValueInList([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", _fuzz_line(fdp, 10)])
    lines = [b" ".join((method, target, version))]
    for _ in range(fdp.ConsumeIntInRange(0, 14)):
        name = fdp.PickValueInList(_NAMES) if fdp.ConsumeIntInRange(0, 5) else _fuzz_line(fdp, 20)
        options = _VALUES.get(name)
        if options and fdp.ConsumeIntInRange(0, 3):
            value = fdp.PickValueInList(options)
        else:
            value = _fuzz_line(fdp)
        sep = fdp.PickValueInList([b": ", b":", b" : ", b":\t"])
        line = name + sep + value
        if fdp.ConsumeIntInRange(0, 15) == 0:
            line += eol + fdp.PickValueInList([b" ", b"\t"]) + _fuzz_line(fdp, 20)  # obs-fold
        lines.append(line)
    head = eol.join(lines) + eol + eol
    if fdp.ConsumeIntInRange(0, 3) == 0:
        head = fdp.PickValueInList([b"\r\n", b"\n", b""]) + head
    return head + _fuzz_line(fdp, 40)


# h11 normalises the framing headers it checks itself: repeated or listed equal
# Content-Length values ("1, 1") become one header, Transfer-Encoding is lower-cased.
# Request.headers shows them as received; every other header must match exactly.
_FRAMING = ("content-length", "transfer-encoding")


def _expected_headers(event: h11.Request) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in event.headers
        if name.decode("latin-1").lower() not in _FRAMING
    ]


def _without_framing(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name not in _FRAMING]


def _server(fdp: atheris.FuzzedDataProvider, raw: bytes, call: str) -> None:
    guard = RequestHeadGuard()
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    head = bytearray()
    pos = 0
    event: object = h11.NEED_DATA
    while pos < len(raw):
        size = fdp.ConsumeIntInRange(1, 2048) if fdp.remaining_bytes() else len(raw) - pos
        data = raw[pos : pos + size]
        pos += size
        try:
            guard.feed(data)
        except HandshakeError as exc:
            if exc.status not in (414, 431):
                raise Finding("invariant", f"handshake: RequestHeadGuard answered {exc.status}", call) from None
            return
        head += data
        conn.receive_data(bytes(data))
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return  # the front door answers 400 (or h11's hint)
        if event is not h11.NEED_DATA:
            break
    if not isinstance(event, h11.Request):
        return
    # The Request an application sees (trio/_http.py), over the head h11 consumed.
    consumed = len(head) - len(conn.trailing_data[0])
    request = Request(
        method=event.method.decode("ascii", "replace"),
        target=event.target.decode("ascii", "replace"),
        http_version=event.http_version.decode("ascii", "replace"),
        raw_head=bytes(head[:consumed]),
    )
    expected = _expected_headers(event)
    seen = _without_framing(request.headers)
    if seen != expected:
        raise Finding("invariant", "handshake: Request.headers differ from the headers h11 parsed",
                      f"{call}\nh11:     {expected!r:.600}\nRequest: {seen!r:.600}")
    eio = EngineIORequest(request.raw_head)
    if _without_framing(eio.headers) != expected:
        raise Finding("invariant", "handshake: EngineIORequest.headers differ from the headers h11 parsed",
                      f"{call}\nh11:            {expected!r:.600}\nEngineIORequest: {list(eio.headers)!r:.600}")
    target = event.target.decode("latin-1")
    if (eio.method, eio.target) != (event.method.decode("latin-1"), target):
        raise Finding("invariant", "handshake: EngineIORequest method/target differ from h11's",
                      f"{call}\nh11: {(event.method, target)!r}\nEngineIORequest: {(eio.method, eio.target)!r}")
    eio.query_params  # noqa: B018 - must not raise
    request.header_tokens("connection")
    request.path, request.query  # noqa: B018

    origins = fdp.PickValueInList([None, "*", ["http://example.com", "https://app.example.com"],
                                   ["HTTP://EXAMPLE.COM:80"], lambda origin, req: origin is None])
    subprotocols = fdp.PickValueInList([(), ["chat"], ["superchat", "chat"], lambda offered: offered[0] if offered else None])
    factories = [] if fdp.ConsumeIntInRange(0, 3) == 0 else [ServerPerMessageDeflateFactory(
        server_no_context_takeover=fdp.ConsumeBool(), client_no_context_takeover=fdp.ConsumeBool(),
        server_max_window_bits=fdp.ConsumeIntInRange(9, 15), client_max_window_bits=fdp.ConsumeIntInRange(9, 15))]
    try:
        result = server_handshake(event, subprotocols=subprotocols, origins=origins, extensions=factories)
    except Exception as exc:  # noqa: BLE001 - it must never raise for anything the client sent
        raise Finding("exception", f"handshake: server_handshake raised {type(exc).__name__}",
                      f"{call}\n{exc!r}") from exc
    if isinstance(result, HandshakeAccepted):
        response = result.response
        if response.status_code != 101 or result.connection is None:
            raise Finding("invariant", "handshake: accepted without a 101 and a connection", call)
        accept = [v for k, v in response.headers if k == b"sec-websocket-accept"]
        key = [v for k, v in event.headers if k == b"sec-websocket-key"]
        if len(accept) != 1 or len(key) != 1 or accept[0].decode() != compute_accept(key[0].strip()):
            raise Finding("invariant", "handshake: 101 without the right Sec-WebSocket-Accept", call)
    elif isinstance(result, HandshakeRejected):
        if not 400 <= result.response.status_code < 600 or not isinstance(result.body, bytes):
            raise Finding("invariant", f"handshake: rejection with status {result.response.status_code}", call)
    else:
        raise Finding("invariant", f"handshake: server_handshake returned {type(result).__name__}", call)


def _response_bytes(fdp: atheris.FuzzedDataProvider, key: str) -> bytes:
    if fdp.ConsumeIntInRange(0, 4) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    status = fdp.PickValueInList([b"101 Switching Protocols", b"101 ", b"200 OK", b"403 Forbidden", b"100 Continue",
                                  _fuzz_line(fdp, 20)])
    lines = [b"HTTP/1.1 " + status]
    accept = compute_accept(key).encode()
    candidates = [
        b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + accept,
        b"Sec-WebSocket-Accept: " + accept[:-2] + b"==", b"Sec-WebSocket-Protocol: chat",
        b"Sec-WebSocket-Protocol: other", b"Sec-WebSocket-Extensions: permessage-deflate",
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover",
        b"Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate", b"Content-Length: 3",
    ]
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if fdp.ConsumeIntInRange(0, 3):
            lines.append(fdp.PickValueInList(candidates))
        else:
            lines.append(fdp.PickValueInList([b"Sec-WebSocket-Extensions: ", b"Sec-WebSocket-Protocol: ",
                                              b"Upgrade: ", b"X: "]) + _fuzz_line(fdp))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _client(fdp: atheris.FuzzedDataProvider, call: str) -> None:
    factories = [] if fdp.ConsumeIntInRange(0, 3) == 0 else [ClientPerMessageDeflateFactory(
        client_no_context_takeover=fdp.ConsumeBool(), server_no_context_takeover=fdp.ConsumeBool(),
        server_max_window_bits=fdp.PickValueInList([None, 9, 12, 15]),
        client_max_window_bits=fdp.PickValueInList([None, True, 9, 15]))]
    handshake = ClientHandshake("example.com", "/chat", subprotocols=["chat"], extensions=factories,
                                key=base64.b64encode(b"0123456789abcdef").decode())
    raw = _response_bytes(fdp, handshake.key)
    try:
        parse_response_head(raw)
    except HandshakeError:
        pass
    conn = h11.Connection(h11.CLIENT)
    conn.send(handshake.request)
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    try:
        event = conn.next_event()
        while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            event = conn.next_event()
    except h11.RemoteProtocolError:
        return
    if isinstance(event, (h11.Response, h11.InformationalResponse)):
        try:
            handshake.receive_response(event)
        except HandshakeError:
            pass


def _headers(fdp: atheris.FuzzedDataProvider) -> None:
    values = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)).decode("latin-1") for _ in range(fdp.ConsumeIntInRange(1, 3))]
    try:
        offers = parse_extensions_header(values)
    except HandshakeError:
        return
    for name, params in offers:
        if not isinstance(name, str) or not all(isinstance(p, str) and (v is None or isinstance(v, str)) for p, v in params):
            raise Finding("invariant", "handshake: parse_extensions_header returned a non-str", repr(values))
    deflate = [params for name, params in offers if name == "permessage-deflate"]
    if deflate:
        try:
            ServerPerMessageDeflateFactory().negotiate(deflate)
        except HandshakeError:
            pass
        try:
            ClientPerMessageDeflateFactory().accept(deflate[0])
        except HandshakeError:
            pass


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    what = fdp.ConsumeIntInRange(0, 5)
    if what <= 3:
        raw = _request_bytes(fdp)
        _server(fdp, raw, f"request {raw[:400]!r}{'...' if len(raw) > 400 else ''} ({len(raw)} bytes)")
    elif what == 4:
        _client(fdp, "client")
    else:
        _headers(fdp)


def linear(data: bytes) -> None:
    text = data.decode("latin-1")
    try:
        parse_extensions_header([text])
    except HandshakeError:
        pass
    guard = RequestHeadGuard(max_request_line=1 << 30, max_header_block=1 << 30, max_header_count=1 << 30)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 30)
    for start in range(0, len(data), 512):
        guard.feed(data[start : start + 512])
        conn.receive_data(data[start : start + 512])
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return
    if isinstance(event, h11.Request):
        Request("GET", "/", raw_head=data).headers  # noqa: B018
        server_handshake(event, extensions=[ServerPerMessageDeflateFactory()])


if __name__ == "__main__":
    main("handshake", check, linear,
         tokens=[b"\r\n", b"\n", b"\r", b"X: y\r\n", b" ", b"\t", b",", b";", b"=", b'"', b"\\", b"a", b":"],
         prefixes=[b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nSec-WebSocket-Extensions: permessage-deflate",
                   b"permessage-deflate; x="])
    sys.exit(0)
