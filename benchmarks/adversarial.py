"""Time per MB of every decoder of untrusted input on worst-case shaped inputs.

    PYTHONPATH=src nice -n 10 python benchmarks/adversarial.py [--only SUBSTRING] [--budget SECONDS]

For each input shape it feeds 64 KiB, 256 KiB and 1 MiB (Engine.IO / Socket.IO shapes:
at most 1,000,000 B, the default ``maxPayload``) to the decoder in one process and
prints the time per MiB of input at each size, plus the growth ratio (time per MiB at
the largest size / at 64 KiB). A linear decoder keeps that ratio near 1 (noise and cache
effects aside); a quadratic one multiplies it by 16 from 64 KiB to 1 MiB.

WebSocket shapes are measured on both speedups twins (``compiled`` and ``python``).
A measurement whose projected quadratic time at the next size exceeds ``--budget``
(default 60 s) is not run: the cell says ``skip`` (only a super-linear decoder gets
there). Each cell is the best CPU time (``time.process_time``: other processes on a
shared machine count less than in wall time) of up to 3 runs, fewer when one run is
slow, with the cyclic garbage collector off while timing (``--gc`` keeps it on: its
collections are amortized linear too, but they add noise that grows with the heap).

The shapes are the ones tests/test_adversarial.py feeds at the largest size under a
time bound; figures taken on a shared machine are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11

from volleyio import _speedups
from volleyio.engineio.packets import decode_payload
from volleyio.engineio.server import EngineIOServer, HttpRequest, HttpResponse, ServerConfig
from volleyio.errors import VolleyError
from volleyio.socketio.packets import Decoder
from volleyio.websocket.connection import Role, WebSocketConnection
from volleyio.websocket.deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from volleyio.websocket.extensions import parse_extensions_header
from volleyio.websocket.handshake import RequestHeadGuard, is_same_origin, server_handshake

KiB = 1024
MiB = 1024 * 1024
SIZES = (64 * KiB, 256 * KiB, 1 * MiB)
MAX_PAYLOAD = 1_000_000  # Engine.IO default maxPayload
KEY = b"\x37\xfa\x21\x3d"


@dataclass
class Case:
    group: str
    name: str
    build: Callable[[int], Any]  # size -> input (built outside the timing)
    run: Callable[[Any], None]  # feeds the input to the decoder
    twins: bool = False  # measured on both speedups implementations
    cap: int | None = None  # largest input size (Engine.IO maxPayload)


def expect_refusal(func: Callable[[], object]) -> None:
    """Run a decoder that may refuse the input: a VolleyError is a fine outcome."""
    try:
        func()
    except VolleyError:
        pass


# ------------------------------------------------------------------------ WebSocket


def masked_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    return _speedups._pure.encode_frame(opcode, payload, fin, rsv, KEY)


def text_payload(size: int) -> bytes:
    # Mixed 1- to 4-byte UTF-8 sequences: the validator's slow path.
    unit = "aé€😀".encode()
    return (unit * (size // len(unit) + 1))[:size - size % len(unit)]


def ws_feed(data: bytes, chunk: int = 0, extensions: list[Any] | None = None) -> Callable[[], None]:
    def run() -> None:
        conn = WebSocketConnection(Role.SERVER, extensions=extensions or ())
        if chunk:
            view = memoryview(data)
            for pos in range(0, len(data), chunk):
                conn.receive_data(view[pos:pos + chunk])
        else:
            conn.receive_data(data)
        conn.events()
        conn.data_to_send()
        if conn.failure is not None:
            raise AssertionError(f"unexpected failure: {conn.failure}")
    return run


def ws_one_frame(size: int) -> bytes:
    return masked_frame(1, text_payload(size - 14))


def ws_tiny_frames(size: int) -> bytes:
    return masked_frame(2, b"") * (size // 6)


def ws_pings(size: int) -> bytes:
    return masked_frame(9, b"") * (size // 6)


def ws_fragments(size: int) -> bytes:
    # The most fragments a message may have (4,096 by default), multi-byte characters
    # cut across fragment boundaries.
    payload = text_payload(size - 4096 * 8)
    step = -(-len(payload) // 4096)
    parts = [payload[i:i + step] for i in range(0, len(payload), step)]
    frames = [masked_frame(1 if i == 0 else 0, part, i == len(parts) - 1) for i, part in enumerate(parts)]
    return b"".join(frames)


def deflate_fragments(size: int) -> bytes:
    # Incompressible data (so the wire size is the input size), 4,096 fragments.
    plain = random.Random(size).randbytes(size - 4096 * 12)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = (compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    step = -(-len(wire) // 4096)
    parts = [wire[i:i + step] for i in range(0, len(wire), step)]
    return b"".join(
        masked_frame(2 if i == 0 else 0, part, i == len(parts) - 1, 4 if i == 0 else 0) for i, part in enumerate(parts)
    )


def deflate_run(data: bytes) -> None:
    ws_feed(data, extensions=[PerMessageDeflate(is_server=True)])()


def utf8_one_byte_feeds(data: bytes) -> None:
    validator = _speedups.Utf8Validator()
    view = memoryview(data)
    feed = validator.feed
    for pos in range(len(data)):
        if feed(view[pos:pos + 1]) != -1:
            raise AssertionError("valid text refused")


def parse_frames_client(data: bytes) -> None:
    # 2-byte unmasked empty frames, as a client parses them: the most frames per byte.
    frames, consumed, error = _speedups.parse_frames(data, False, MiB, 0, True)
    if error is not None or consumed != len(data):
        raise AssertionError(error)


# ----------------------------------------------------------------- handshake / HTTP


def ext_quoted_pairs(size: int) -> list[str]:
    return ['permessage-deflate; p="' + "\\a" * ((size - 25) // 2) + '"']


def ext_many_params(size: int) -> list[str]:
    return ["permessage-deflate" + "; a" * ((size - 18) // 3)]


def ext_empty_elements(size: int) -> list[str]:
    return [", " * (size // 2) + "x"]


def deflate_offers(size: int) -> list[str]:
    return ["permessage-deflate; server_max_window_bits=16, " * (size // 48)]


def negotiate_offers(values: list[str]) -> None:
    offers = [params for name, params in parse_extensions_header(values) if name == "permessage-deflate"]
    ServerPerMessageDeflateFactory().negotiate(offers)


def upgrade_request(size: int) -> h11.Request:
    protocols = "chat, " * ((size - 200) // 6)
    return h11.Request(
        method="GET",
        target="/",
        headers=[
            ("Host", "example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", protocols + "x"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; a, " * ((size - 200) // 23) + "x"),
        ],
    )


def handshake_run(request: h11.Request) -> None:
    server_handshake(request, subprotocols=("other",), extensions=[ServerPerMessageDeflateFactory()])


def head_bytes(size: int) -> bytes:
    lines = [b"GET / HTTP/1.1", b"Host: example.com"]
    line = b"X-Filler: " + b"a " * 40
    while sum(len(x) + 2 for x in lines) < size - 100:
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def head_one_byte_reads(data: bytes) -> None:
    # Our RequestHeadGuard and h11 with their limits raised to the input size, fed one
    # byte per read (the I/O layer's worst case).
    guard = RequestHeadGuard(max_request_line=len(data), max_header_block=len(data), max_header_count=len(data))
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(data) + 1)
    view = memoryview(data)
    for pos in range(len(data)):
        byte = bytes(view[pos:pos + 1])
        guard.feed(byte)
        conn.receive_data(byte)
        if conn.next_event() is not h11.NEED_DATA:
            break
    if not guard.head_complete:
        raise AssertionError("head not complete")


def guard_one_byte_reads(data: bytes) -> None:
    guard = RequestHeadGuard(max_request_line=len(data), max_header_block=len(data), max_header_count=len(data))
    view = memoryview(data)
    for pos in range(len(data)):
        guard.feed(view[pos:pos + 1])
    if not guard.head_complete:
        raise AssertionError("head not complete")


def query_plain(size: int) -> str:
    return "a=1&" * (size // 4)


def query_escaped(size: int) -> str:
    return "%41=%42&" * (size // 8)


def parse_query(query: str) -> None:
    from volleyio.trio._engineio_server import _parse_query

    _parse_query(query)


# -------------------------------------------------------------------------- Engine.IO


def eio_tiny_packets(size: int) -> bytes:
    return "\x1e".join(["4x"] * (size // 3)).encode()


def eio_base64(size: int) -> bytes:
    return b"b" + base64.b64encode(os.urandom((size - 1) // 4 * 3))


def eio_base64_bad_end(size: int) -> bytes:
    return b"b" + b"A" * (size - 6) + b"AAA!="


def eio_utf8_bad_end(size: int) -> bytes:
    return b"4" + "é".encode() * ((size - 3) // 2) + b"\xc3("


def eio_server_post(size: int) -> tuple[EngineIOServer, str, bytes]:
    server = EngineIOServer(ServerConfig())
    response = server.handle_request(HttpRequest("GET", "/engine.io/", {"EIO": "4", "transport": "polling"}), 0.0)
    assert isinstance(response, HttpResponse)
    sid = response.body.split(b'"sid":"')[1].split(b'"')[0].decode()
    return server, sid, eio_tiny_packets(size)


def eio_server_post_run(state: tuple[EngineIOServer, str, bytes]) -> None:
    server, sid, body = state
    query = {"EIO": "4", "transport": "polling", "sid": sid}
    server.handle_request(HttpRequest("POST", "/engine.io/", query, {"content-type": "text/plain"}), 0.0)
    response = server.post_body(sid, body, 0.0)
    assert response.status == 200, response
    server.take_events()


# -------------------------------------------------------------------------- Socket.IO


def sio(text: str) -> Callable[[], None]:
    return lambda: Decoder().receive(text)


def sio_binary(header: str, attachment: bytes) -> None:
    decoder = Decoder()
    decoder.receive(header)
    if decoder.receive(attachment) is None:
        raise AssertionError("attachment not taken")


def fill(size: int, prefix: str, unit: str, suffix: str) -> str:
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


SIO_SHAPES: dict[str, Callable[[int], str]] = {
    # The reproducer: an unterminated string of escaped quotes, then 1001 '['.
    "unterminated escapes + 1001 [": lambda n: fill(n - 1001, '2"', '\\"', "") + "[" * 1001,
    "1001 [ + unterminated escapes": lambda n: "2" + "[" * 1001 + fill(n - 1002, '"', '\\"', ""),
    "escaped quotes in a string": lambda n: fill(n, '2["a","', '\\"', '"]'),
    "backslashes then quotes": lambda n: fill(n, '2["a","', '\\\\\\"', '"]'),
    "brackets inside a string": lambda n: fill(n, '2["a","', "[{", '"]'),
    "deep nesting": lambda n: "2" + "[" * (n - 1),
    "nesting at the cap, wide": lambda n: "2" + "[" * 999 + fill(n - 2000, "", "1,", "1") + "]" * 999,
    "empty arrays": lambda n: fill(n, '2["a"', ",[]", "]"),
    "1000-digit integers": lambda n: fill(n, '2["a"', "," + "9" * 1000, "]"),
    "integer past the cap": lambda n: fill(n, '2["a",', "1", "]"),
    "one long float": lambda n: fill(n, '2["a",0.', "1", "]"),
    "huge exponent": lambda n: fill(n, '2["a",1e', "9", "]"),
    "unicode escapes": lambda n: fill(n, '2["a","', "\\ud83d\\ude00", '"]'),
    "small objects": lambda n: fill(n, '2["a"', ',{"k":[1,2,{"x":null}]}', "]"),
    "long namespace": lambda n: fill(n, "2/", "n", ',["a"]'),
    "unterminated string": lambda n: fill(n, '2["a","', "x", ""),
}


def sio_placeholders(size: int) -> tuple[str, bytes]:
    return fill(size - 1, '51-["a"', ',{"_placeholder":true,"num":0}', "]"), b"x"


def sio_attachment(size: int) -> tuple[str, bytes]:
    return '51-["a",{"_placeholder":true,"num":0}]', os.urandom(size)


# ------------------------------------------------------------------------------ table


def cases() -> list[Case]:
    ws = "WebSocket frames"
    result = [
        Case(ws, "one 1 MiB masked text frame, one read", ws_one_frame, lambda d: ws_feed(d)(), True),
        Case(ws, "the same frame, 1-byte reads", ws_one_frame, lambda d: ws_feed(d, 1)(), True),
        Case(ws, "empty masked binary frames", ws_tiny_frames, lambda d: ws_feed(d)(), True),
        Case(ws, "empty masked pings (pong each)", ws_pings, lambda d: ws_feed(d)(), True),
        Case(ws, "4,096 text fragments, split UTF-8", ws_fragments, lambda d: ws_feed(d)(), True),
        Case(ws, "deflate, 4,096 fragments", deflate_fragments, deflate_run, True),
        Case(ws, "parse_frames: 2-byte frames (client)", lambda n: b"\x82\x00" * (n // 2), parse_frames_client, True),
        Case(ws, "Utf8Validator: 1-byte feeds", text_payload, utf8_one_byte_feeds, True),
    ]
    hs = "Handshake / HTTP"
    result += [
        Case(hs, "extensions: quoted-pair escapes", ext_quoted_pairs, lambda v: expect_refusal(lambda: parse_extensions_header(v))),
        Case(hs, "extensions: many parameters", ext_many_params, parse_extensions_header),
        Case(hs, "extensions: empty list elements", ext_empty_elements, parse_extensions_header),
        Case(hs, "deflate: declined offers", deflate_offers, negotiate_offers),
        Case(hs, "server_handshake: protocols + offers", upgrade_request, handshake_run),
        Case(hs, "Origin: long host", lambda n: "http://" + "a" * (n - 10) + ":80", lambda o: is_same_origin(o, "a:80")),
        Case(hs, "head guard: 1-byte reads", head_bytes, guard_one_byte_reads),
        Case(hs, "head guard + h11: 1-byte reads", head_bytes, head_one_byte_reads),
        Case(hs, "query string: plain", query_plain, parse_query),
        Case(hs, "query string: %-escaped", query_escaped, parse_query),
    ]
    eio = "Engine.IO payloads"
    result += [
        Case(eio, "tiny packets", eio_tiny_packets, decode_payload, cap=MAX_PAYLOAD),
        Case(eio, "one base64 packet", eio_base64, decode_payload, cap=MAX_PAYLOAD),
        Case(eio, "base64, bad last char", eio_base64_bad_end, lambda d: expect_refusal(lambda: decode_payload(d)), cap=MAX_PAYLOAD),
        Case(eio, "UTF-8, bad last char", eio_utf8_bad_end, lambda d: expect_refusal(lambda: decode_payload(d)), cap=MAX_PAYLOAD),
        Case(eio, "server core: POST of tiny packets", eio_server_post, eio_server_post_run, cap=MAX_PAYLOAD),
    ]
    sio_group = "Socket.IO packets"
    for name, shape in SIO_SHAPES.items():
        result.append(Case(sio_group, name, shape, lambda t: expect_refusal(sio(t)), cap=MAX_PAYLOAD))
    result += [
        Case(sio_group, "placeholders", sio_placeholders, lambda a: expect_refusal(lambda: sio_binary(*a)), cap=MAX_PAYLOAD),
        Case(sio_group, "one big attachment", sio_attachment, lambda a: sio_binary(*a), cap=MAX_PAYLOAD),
    ]
    return result


def measure(case: Case, size: int, keep_gc: bool) -> float:
    """Best CPU time (s) of up to 3 runs; CPU time of this process, not wall time, so
    that other processes on a shared machine count less."""
    data = case.build(size)
    best = float("inf")
    for _ in range(3):
        if isinstance(data, tuple) and isinstance(data[0], EngineIOServer):
            data = case.build(size)  # a server core is single-use
        gc.collect()
        if not keep_gc:
            gc.disable()
        try:
            t0 = time.process_time()
            case.run(data)
            elapsed = time.process_time() - t0
        finally:
            gc.enable()
        best = min(best, elapsed)
        if elapsed > 1.0:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only cases whose group or name contains this")
    parser.add_argument("--budget", type=float, default=60.0, help="skip a size projected (quadratically) past this")
    parser.add_argument("--sizes", default="", help="comma-separated KiB sizes (default 64,256,1024)")
    parser.add_argument("--gc", action="store_true", help="keep the cyclic garbage collector on while timing")
    args = parser.parse_args()
    sizes = tuple(int(s) * KiB for s in args.sizes.split(",")) if args.sizes else SIZES
    impls = [name for name in ("compiled", "python") if name in _speedups.available()]
    print(f"Python {sys.version.split()[0]}, speedups available: {', '.join(impls)}")
    print(
        "CPU ms per MiB of input (best of up to 3"
        + (", cyclic GC on" if args.gc else ", cyclic GC off while timing")
        + "); growth = ms/MiB at the largest size / at the smallest\n"
    )
    heads = " | ".join(f"{s // KiB} KiB" for s in sizes)
    print(f"| decoder | input | twin | {heads} | growth |")
    print("|---|---|---|" + "---:|" * len(sizes) + "---:|")
    for case in cases():
        if args.only and args.only not in case.group and args.only not in case.name:
            continue
        for impl in impls if case.twins else ["-"]:
            if impl != "-":
                _speedups.select(impl)
            cells: list[str] = []
            per_mb: list[float] = []
            previous = 0.0
            for size in sizes:
                if case.cap is not None:
                    size = min(size, case.cap)
                if previous * 16 > args.budget:
                    cells.append("skip")
                    continue
                elapsed = measure(case, size, args.gc)
                previous = elapsed
                per_mb.append(elapsed / (size / MiB) * 1000)
                cells.append(f"{per_mb[-1]:.1f}")
            growth = f"{per_mb[-1] / per_mb[0]:.2f}" if len(per_mb) == len(sizes) and per_mb[0] > 0 else "-"
            print(f"| {case.group} | {case.name} | {impl} | " + " | ".join(cells) + f" | {growth} |", flush=True)
    if "compiled" in impls:
        _speedups.select("compiled")


if __name__ == "__main__":
    main()
