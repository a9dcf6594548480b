"""Robustness target: the Engine.IO v4 decoders and the sans-I/O server fed by a hostile client.

Part 1, the decoders: ``decode_payload`` (polling bodies, as bytes or str) and
``decode_websocket_frame`` may raise only ``EngineIOParseError``; whatever they accept
must survive ``encode_payload`` / ``encode_websocket_frame`` and decode to the same
packets again.

Part 2, a session (text as a real peer can send it: WebSocket text and POST bodies are
valid UTF-8, so no lone surrogates): a polling handshake, then a random sequence of POST bodies, GET
polls, a WebSocket upgrade with messages (text and binary, "2probe", "5", garbage),
requests with fuzzed queries and timers running. ``EngineIOServer`` must answer every
one of them without raising (a peer's bad input ends that peer's session, with the
Engine.IO error codes), and every response must have a status and a body.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    from volleyio.engineio.packets import (
        EngineIOParseError,
        decode_payload,
        decode_websocket_frame,
        encode_payload,
        encode_websocket_frame,
    )
    from volleyio.engineio.server import (
        AcceptWebSocket,
        EngineIOServer,
        HttpRequest,
        HttpResponse,
        ReadBody,
        ServerConfig,
    )

from _harness import Finding, main


def _decoders(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    body: str | bytes = raw
    if fdp.ConsumeBool():
        body = raw.decode("utf-8", "surrogatepass" if fdp.ConsumeBool() else "replace") if _utf8ish(raw) else raw.decode("latin-1")
    try:
        packets = decode_payload(body)
    except EngineIOParseError:
        packets = None
    if packets is not None:
        text, leftover = encode_payload(packets, max_packets=None)
        again = decode_payload(text)
        if again != packets or leftover:
            raise Finding("invariant", "engineio: payload does not survive encode/decode",
                          f"body={body!r:.300}\nfirst={packets!r:.300}\nagain={again!r:.300}")
    frame: str | bytes = raw if fdp.ConsumeBool() else raw.decode("utf-8", "replace")
    try:
        packet = decode_websocket_frame(frame)
    except EngineIOParseError:
        return
    if decode_websocket_frame(encode_websocket_frame(packet)) != packet:
        raise Finding("invariant", "engineio: frame does not survive encode/decode", f"frame={frame!r:.300}")


def _utf8ish(raw: bytes) -> bool:
    try:
        raw.decode("utf-8", "surrogatepass")
        return True
    except UnicodeDecodeError:
        return False


def _check_response(response: object, what: str, call: list[str]) -> None:
    if isinstance(response, HttpResponse):
        if not 100 <= response.status < 600 or not isinstance(response.body, bytes):
            raise Finding("invariant", f"engineio: bad response to {what}", "\n".join(call))


def _session(fdp: atheris.FuzzedDataProvider) -> None:
    config = ServerConfig(max_payload=fdp.PickValueInList([1_000_000, 64, 1000]),
                          allowed_origins=fdp.PickValueInList([None, "*", ("http://example.com",)]))
    server = EngineIOServer(config)
    now = 1000.0
    call: list[str] = []
    try:
        _drive(fdp, server, call, now)
    except Exception as exc:
        exc.add_note("operations: " + " | ".join(call)[-3000:])
        raise


def _drive(fdp: atheris.FuzzedDataProvider, server: EngineIOServer, call: list[str], now: float) -> None:
    outcome = server.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling"}), now)
    if not isinstance(outcome, HttpResponse) or outcome.status != 200:
        raise Finding("invariant", "engineio: polling handshake refused", repr(outcome))
    sid = outcome.body.decode()[1:].split('"sid":"', 1)[1].split('"', 1)[0]
    channel = None
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        now += fdp.ConsumeIntInRange(0, 30000) / 1000
        op = fdp.ConsumeIntInRange(0, 7)
        if op <= 1:  # a POST with a fuzzed body
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
            call.append(f"POST {body!r:.200}")
            result = server.handle_request(HttpRequest("POST", "/engine.io/", {"EIO": "4", "transport": "polling", "sid": sid}), now)
            _check_response(result, "POST", call)
            if isinstance(result, ReadBody):
                if len(body) > result.limit:
                    _check_response(server.post_too_large(sid, now), "POST too large", call)
                else:
                    _check_response(server.post_body(sid, body, now), "POST body", call)
        elif op == 2:  # a GET poll
            call.append("GET")
            result = server.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling", "sid": sid}), now)
            _check_response(result, "GET", call)
            _check_response(server.poll_ready(sid, now), "poll_ready", call)
            if fdp.ConsumeBool():
                server.poll_cancelled(sid, now)
        elif op == 3:  # a request with fuzzed method/query/headers
            keys = ["EIO", "transport", "sid", "j", "b64", "t"]
            query = {fdp.PickValueInList(keys): fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 30))
                     for _ in range(fdp.ConsumeIntInRange(0, 4))}
            if fdp.ConsumeBool():
                query["sid"] = sid
            method = fdp.PickValueInList(["GET", "POST", "OPTIONS", "PUT", ""])
            headers = {"origin": fdp.ConsumeUnicodeNoSurrogates(20)} if fdp.ConsumeBool() else {}
            upgrade = fdp.ConsumeBool()
            call.append(f"{method} {query!r} {headers!r} upgrade={upgrade}")
            result = server.handle_request(HttpRequest(method, "/engine.io/", query, headers, upgrade), now)
            _check_response(result, "request", call)
            if isinstance(result, ReadBody):
                _check_response(server.post_body(result.sid, fdp.ConsumeBytes(200), now), "POST body", call)
            if isinstance(result, AcceptWebSocket) and result.channel is not None:
                channel = result.channel
        elif op <= 5:  # upgrade, then WebSocket messages
            if channel is None:
                call.append("upgrade")
                result = server.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "websocket", "sid": sid},
                                                           {}, True), now)
                _check_response(result, "upgrade", call)
                if isinstance(result, AcceptWebSocket) and result.channel is not None:
                    channel = result.channel
            if channel is not None:
                for _ in range(fdp.ConsumeIntInRange(1, 4)):
                    message: str | bytes
                    choice = fdp.ConsumeIntInRange(0, 4)
                    if choice == 0:
                        message = fdp.PickValueInList(["2probe", "5", "6", "1", "3", "4hello", ""])
                    elif choice == 1:
                        message = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 100))
                    else:
                        message = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
                    call.append(f"ws {message!r:.100}")
                    channel.receive(message, now)
                    channel.take_outgoing()
                if fdp.ConsumeIntInRange(0, 5) == 0:
                    channel.connection_lost(now)
                    channel = None
        elif op == 6:
            call.append("timers")
            server.handle_timers(now)
        else:
            call.append("session send")
            session = server._sessions.get(sid)
            if session is not None:
                out = fdp.ConsumeUnicodeNoSurrogates(50) if fdp.ConsumeBool() else fdp.ConsumeBytes(50)
                call[-1] += f" {out!r:.60}"
                session.send(out)
        server.take_events()


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 2):
        _decoders(fdp)
    else:
        _session(fdp)


def linear(data: bytes) -> None:
    try:
        decode_payload(data)
    except EngineIOParseError:
        pass
    try:
        decode_payload(data.decode("latin-1"))
    except EngineIOParseError:
        pass


if __name__ == "__main__":
    main("engineio", check, linear, tokens=[b"\x1e", b"4", b"b", b"AAAA", b"=", b"2", b"\xc3\xa9", b"6"],
         prefixes=[b"4", b"b", b"2"])
    sys.exit(0)
