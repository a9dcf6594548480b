"""Robustness target: the sans-I/O ``WebSocketConnection``, both roles, with and without
permessage-deflate negotiated.

A random configuration (role, deflate and its parameters, message/fragment limits,
streaming/plain delivery, auto pong) receives a byte stream (raw fuzz bytes, or frames
built from them: fragmented, compressed, control frames, close codes, corruptions) in
random reads, with sends (text, binary, ping, close) interleaved. Findings:

* ``receive_data`` raises anything at all (it must never raise for peer input);
* a failure closes with a code that is not a valid close code, or with 1011 (an
  extension broke: our bug, never the peer's);
* a delivered message breaks the limits or its type (text is ``str``, binary ``bytes``);
* the compiled and pure speedups give different events, close codes or output bytes;
* the same stream read whole or in pieces gives different events or output
  (split invariance).
"""

from __future__ import annotations

import struct
import sys
import types
import zlib

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    from volleyio import VolleyError, _speedups
    from volleyio.websocket import connection as connection_module
    from volleyio.websocket.connection import Role, WebSocketConnection, is_valid_close_code
    from volleyio.websocket.deflate import PerMessageDeflate
    from volleyio.websocket.events import BinaryMessage, ConnectionClosed, MessageChunk, TextMessage

from _harness import Finding, main

# Deterministic client mask keys, so that both twins' output can be compared byte for byte.
connection_module.os = types.SimpleNamespace(urandom=lambda n: b"\x5a\xa5\x3c\xc3"[:n])  # type: ignore[attr-defined]

_LIMITS = [None, 0, 1, 16, 125, 126, 1000, 65536, 1 << 20]


class Config:
    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.server = fdp.ConsumeBool()
        self.deflate = fdp.ConsumeBool()
        self.local_nct = fdp.ConsumeBool()
        self.remote_nct = fdp.ConsumeBool()
        self.local_bits = fdp.ConsumeIntInRange(8, 15)
        self.remote_bits = fdp.ConsumeIntInRange(8, 15)
        self.max_message_size = fdp.PickValueInList(_LIMITS)
        self.max_fragments = fdp.PickValueInList([None, 1, 2, 4, 4096])
        self.stream = fdp.ConsumeBool()
        self.plain = fdp.ConsumeBool()
        self.auto_pong = fdp.ConsumeIntInRange(0, 3) != 0

    def new(self) -> WebSocketConnection:
        extensions = []
        if self.deflate:
            extensions.append(PerMessageDeflate(
                is_server=self.server,
                local_no_context_takeover=self.local_nct,
                remote_no_context_takeover=self.remote_nct,
                local_max_window_bits=self.local_bits,
                remote_max_window_bits=self.remote_bits,
                threshold=0,
            ))
        return WebSocketConnection(
            Role.SERVER if self.server else Role.CLIENT,
            max_message_size=self.max_message_size,
            max_fragments=self.max_fragments,
            extensions=extensions,
            auto_pong=self.auto_pong,
            stream_messages=self.stream,
            plain_messages=self.plain,
        )

    def __repr__(self) -> str:
        return repr(vars(self))


def _header(b0: int, masked: bool, n: int, form: int) -> bytes:
    mbit = 0x80 if masked else 0
    if form == 2 or n >= 0x10000:
        return bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if form == 1 or n >= 126:
        return bytes((b0, mbit | 126)) + struct.pack("!H", n)
    return bytes((b0, mbit | n))


def _frame(fdp: atheris.FuzzedDataProvider, opcode: int, payload: bytes, fin: bool, rsv: int, masked: bool) -> bytes:
    form = fdp.PickValueInList([0, 0, 0, 1, 2])
    header = _header((0x80 if fin else 0) | (rsv << 4) | opcode, masked, len(payload), form)
    if masked:
        key = fdp.ConsumeBytes(4).ljust(4, b"\x00")
        return header + key + _speedups._pure.mask(payload, key)
    return header + payload


def _payload(fdp: atheris.FuzzedDataProvider, limit: int) -> bytes:
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, limit)).encode("utf-8")
    size = fdp.ConsumeIntInRange(0, limit)
    return (fdp.ConsumeBytes(min(size, 64)) * (size // 8 + 1))[:size]


def _deflate(fdp: atheris.FuzzedDataProvider, payload: bytes, bits: int) -> bytes:
    compressor = zlib.compressobj(fdp.ConsumeIntInRange(0, 9), zlib.DEFLATED, -max(bits, 9))
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") and fdp.ConsumeIntInRange(0, 7) else data


def _stream(fdp: atheris.FuzzedDataProvider, config: Config) -> bytes:
    if fdp.ConsumeIntInRange(0, 4) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    masked_ok = config.server  # a server receives masked frames
    out = bytearray()
    for _ in range(fdp.ConsumeIntInRange(1, 10)):
        masked = masked_ok if fdp.ConsumeIntInRange(0, 15) else not masked_ok
        kind = fdp.ConsumeIntInRange(0, 9)
        if kind <= 5:  # a data message, maybe fragmented, maybe compressed
            opcode = 1 if fdp.ConsumeBool() else 2
            payload = _payload(fdp, 3000)
            compressed = config.deflate and fdp.ConsumeIntInRange(0, 3) != 0
            if compressed:
                payload = _deflate(fdp, payload, config.remote_bits)
            pieces = fdp.ConsumeIntInRange(1, 4)
            cuts = sorted(fdp.ConsumeIntInRange(0, len(payload)) for _ in range(pieces - 1))
            bounds = [0, *cuts, len(payload)]
            for i in range(pieces):
                first = i == 0
                out += _frame(fdp, opcode if first else 0, payload[bounds[i] : bounds[i + 1]], i == pieces - 1,
                              4 if compressed and first else 0, masked)
                if i < pieces - 1 and fdp.ConsumeIntInRange(0, 5) == 0:
                    out += _frame(fdp, 9, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20)), True, 0, masked)
        elif kind <= 7:  # ping / pong
            out += _frame(fdp, fdp.PickValueInList([9, 10]), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 126)), True, 0, masked)
        elif kind == 8:  # close
            code = fdp.PickValueInList([1000, 1001, 1002, 1005, 1006, 1015, 1016, 2999, 3000, 4999, 5000, 0,
                                        fdp.ConsumeIntInRange(0, 65535)])
            body = b"" if fdp.ConsumeIntInRange(0, 4) == 0 else struct.pack("!H", code) + fdp.ConsumeBytes(
                fdp.ConsumeIntInRange(0, 130))
            out += _frame(fdp, 8, body, True, 0, masked)
        else:  # anything: reserved opcodes, bad RSV, raw bytes
            if fdp.ConsumeBool():
                out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
            else:
                out += _frame(fdp, fdp.ConsumeIntInRange(0, 15), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)),
                              fdp.ConsumeBool(), fdp.ConsumeIntInRange(0, 7), masked)
    if out and fdp.ConsumeIntInRange(0, 5) == 0:
        out[fdp.ConsumeIntInRange(0, len(out) - 1)] = fdp.ConsumeIntInRange(0, 255)
    return bytes(out)


def _run(config: Config, chunks: list[bytes], actions: list[tuple[int, str, object]], eof: bool) -> tuple:
    conn = config.new()
    events: list[object] = []
    output = bytearray()
    pending = list(actions)
    for index, chunk in enumerate(chunks):
        conn.receive_data(chunk)  # must never raise
        events.extend(conn.events())
        while pending and pending[0][0] <= index:
            _, what, arg = pending.pop(0)
            try:
                if what == "text":
                    conn.send_text(arg)  # type: ignore[arg-type]
                elif what == "binary":
                    conn.send_binary(arg)  # type: ignore[arg-type]
                elif what == "ping":
                    conn.send_ping(arg)  # type: ignore[arg-type]
                else:
                    conn.close(arg)  # type: ignore[arg-type]
            except VolleyError:
                pass  # ConnectionClosedError: sending on a closing/closed connection
        output += conn.data_to_send()
    if eof:
        conn.receive_data(b"")
        events.extend(conn.events())
        output += conn.data_to_send()
    failure = None if conn.failure is None else (conn.failure.code, str(conn.failure))
    return events, bytes(output), failure, conn.state


def _check_run(config: Config, result: tuple, call: str) -> None:
    events, _, failure, _ = result
    if failure is not None:
        code, reason = failure
        if not is_valid_close_code(code) or code == 1011:
            raise Finding("invariant", f"websocket: failed with {code} ({reason.split(':')[0]})", call)
    limit = config.max_message_size
    closed = 0
    for event in events:
        if isinstance(event, ConnectionClosed):
            closed += 1
        data = None
        if isinstance(event, TextMessage):
            data = event.data
            if type(data) is not str:
                raise Finding("invariant", "websocket: TextMessage data is not str", call)
        elif isinstance(event, BinaryMessage):
            data = event.data
            if type(data) is not bytes:
                raise Finding("invariant", "websocket: BinaryMessage data is not bytes", call)
        elif isinstance(event, (str, bytes)):
            data = event
        elif isinstance(event, MessageChunk):
            if type(event.data) is not (str if event.is_text else bytes):
                raise Finding("invariant", "websocket: MessageChunk data of the wrong type", call)
        if data is not None and limit is not None:
            size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
            if size > limit:
                raise Finding("invariant", "websocket: message larger than max_message_size delivered", call)
    if closed > 1:
        raise Finding("invariant", "websocket: ConnectionClosed delivered twice", call)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    config = Config(fdp)
    stream = _stream(fdp, config)
    chunks = []
    pos = 0
    while pos < len(stream):
        size = fdp.ConsumeIntInRange(1, 1024) if fdp.remaining_bytes() else len(stream) - pos
        chunks.append(stream[pos : pos + size])
        pos += size
    actions: list[tuple[int, str, object]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        what = fdp.PickValueInList(["text", "binary", "ping", "close"])
        arg: object = {"text": "héllo" * fdp.ConsumeIntInRange(0, 50), "binary": b"\x00\xff" * fdp.ConsumeIntInRange(0, 50),
                       "ping": b"p", "close": fdp.PickValueInList([1000, 1001, 3000, None])}[what]
        actions.append((fdp.ConsumeIntInRange(0, max(len(chunks) - 1, 0)), what, arg))
    eof = fdp.ConsumeIntInRange(0, 3) == 0
    call = f"config={config!r} stream={stream[:120]!r}{'...' if len(stream) > 120 else ''} ({len(stream)} bytes) " \
           f"reads={[len(c) for c in chunks][:40]} actions={actions} eof={eof}"

    previous = _speedups.select("compiled")
    try:
        compiled = _run(config, chunks, actions, eof)
        whole = _run(config, [stream] if stream else [], [], eof)
        split = _run(config, chunks, [], eof)
        _speedups.select("python")
        pure = _run(config, chunks, actions, eof)
    finally:
        _speedups.select(previous)
    _check_run(config, compiled, call)
    _check_run(config, pure, call)
    if compiled[:3] != pure[:3]:
        what = "events" if compiled[0] != pure[0] else "output bytes" if compiled[1] != pure[1] else "failure"
        raise Finding("twin", f"websocket: compiled and pure speedups give different {what}",
                      f"{call}\ncompiled: {compiled!r:.600}\npure:     {pure!r:.600}")
    if whole[:3] != split[:3]:
        what = "events" if whole[0] != split[0] else "output bytes" if whole[1] != split[1] else "failure"
        raise Finding("invariant", f"websocket: one read and many reads give different {what}",
                      f"{call}\nwhole: {whole!r:.600}\nsplit: {split!r:.600}")


def linear(data: bytes) -> None:
    server = bool(data[:1]) and data[0] & 1  # the first byte picks the role, the rest is the stream
    data = data[1:]
    for name in ("compiled", "python"):
        previous = _speedups.select(name)
        try:
            for step in (len(data) or 1, 61):
                conn = WebSocketConnection(Role.SERVER if server else Role.CLIENT, max_message_size=None)
                for start in range(0, len(data), step):
                    conn.receive_data(data[start : start + step])
                    conn.events()
                    conn.data_to_send()
        finally:
            _speedups.select(previous)


if __name__ == "__main__":
    main("websocket", check, linear,
         tokens=[b"\x81\x80abcd", b"\x82\x80abcd", b"\x01\x80abcd", b"\x00\x80abcd", b"\x80\x80abcd", b"\x89\x80abcd",
                 b"\x81\x00", b"\x01\x00", b"\x00\x00", b"\x89\x00", b"\x01\x81abcd\xa2", b"\x00\x81abcd\xa2"],
         prefixes=[b"\x01", b"\x00"])
    sys.exit(0)
