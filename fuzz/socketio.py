"""Robustness target: the Socket.IO v5 ``Decoder``, binary attachments included.

A sequence of Engine.IO messages (text packets built from fuzz bytes or from a grammar
of packet types, attachment counts, namespaces, ack ids and JSON; binary attachments)
goes through one ``Decoder`` with default or small limits. Findings:

* an exception other than ``SocketIODecodeError`` (``VolleyError``'s subclass);
* a decoded packet that breaks the limits (attachments, ack id) or cannot be encoded
  back and decoded to the same packet (``encode_packet``);
* super-linear time: the nesting-depth pre-check and the JSON path must be linear
  (the harness grows inputs like ``'2"' + '\\"' * n + '[' * n``).
"""

from __future__ import annotations

import math
import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    from volleyio.socketio.packets import (
        MAX_ACK_ID,
        Decoder,
        SocketIODecodeError,
        SocketIOEncodeError,
        encode_packet,
    )

from _harness import Finding, main

_JSON_BITS = ['"', '\\"', "\\", "[", "]", "{", "}", ",", ":", "1", "-0", "1e400", "1.5", "null", "true", "NaN",
              '"a"', '"\\ud800"', '"\\u0000"', '{"_placeholder":true,"num":0}', '{"_placeholder":true,"num":9}',
              " ", "\n", "9" * 20, "é", "\ud800", '"connect"', '"disconnect"']


def _text_packet(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
        return raw.decode("utf-8", "surrogatepass") if _decodes(raw) else raw.decode("latin-1")
    out = [fdp.PickValueInList(list("0123456") + ["7", "x", ""])]
    if out[0] in ("5", "6") or fdp.ConsumeIntInRange(0, 7) == 0:
        out.append(f"{fdp.ConsumeIntInRange(0, 12)}-" if fdp.ConsumeIntInRange(0, 5) else fdp.ConsumeUnicode(4))
    if fdp.ConsumeIntInRange(0, 2) == 0:
        out.append(fdp.PickValueInList(["/admin,", "/", "/chat", "/x,", "/é,"]))
    if fdp.ConsumeIntInRange(0, 2) == 0:
        out.append(fdp.PickValueInList(["0", "1", "9007199254740991", "9007199254740992", "12345678901234567",
                                        str(fdp.ConsumeIntInRange(0, 1 << 60))]))
    body = []
    for _ in range(fdp.ConsumeIntInRange(0, 24)):
        if fdp.ConsumeIntInRange(0, 3):
            body.append(fdp.PickValueInList(_JSON_BITS))
        else:
            body.append(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 8)))
    if fdp.ConsumeBool():
        body = ['["ev",', *body, "]"]
    out.extend(body)
    return "".join(out)


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8", "surrogatepass")
        return True
    except UnicodeDecodeError:
        return False


def _check_packet(packet: object, decoder: Decoder, call: str) -> None:
    if packet is None:
        return
    ack = packet.id  # type: ignore[attr-defined]
    if ack is not None and not 0 <= ack <= MAX_ACK_ID:
        raise Finding("invariant", "socketio: ack id out of range accepted", call)
    try:
        messages = encode_packet(packet)  # type: ignore[arg-type]
    except SocketIOEncodeError as exc:
        raise Finding("invariant", "socketio: decoded packet cannot be encoded", f"{call}\n{exc}") from None
    again = Decoder(max_attachments=1 << 20, max_depth=decoder.max_depth, max_integer_digits=decoder.max_integer_digits)
    result = None
    for message in messages:
        result = again.receive(message)
    # A binary packet whose attachments are not referenced encodes as the plain type.
    plain = {5: 2, 6: 3}
    if result is None or (plain.get(int(result.type), int(result.type)) != plain.get(int(packet.type), int(packet.type))  # type: ignore[attr-defined]
                          or (result.namespace, result.id) != (packet.namespace, packet.id)  # type: ignore[attr-defined]
                          or not _same(result.data, packet.data)):  # type: ignore[attr-defined]
        raise Finding("invariant", "socketio: encode/decode round trip changes the packet",
                      f"{call}\nfirst: {packet!r:.400}\nagain: {result!r:.400}")


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        decoder = Decoder()
    else:
        decoder = Decoder(max_attachments=fdp.ConsumeIntInRange(0, 3), max_depth=fdp.ConsumeIntInRange(1, 20),
                          max_integer_digits=fdp.ConsumeIntInRange(1, 30))
    call = []
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        message: str | bytes
        if fdp.ConsumeIntInRange(0, 3) == 0:
            message = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        else:
            message = _text_packet(fdp)
        call.append(message)
        try:
            packet = decoder.receive(message)
        except SocketIODecodeError:
            decoder = Decoder(max_attachments=decoder.max_attachments, max_depth=decoder.max_depth,
                              max_integer_digits=decoder.max_integer_digits)  # the session would close
            continue
        _check_packet(packet, decoder, f"messages={call!r:.800}")


def linear(data: bytes) -> None:
    text = data.decode("utf-8", "surrogatepass") if _decodes(data) else data.decode("latin-1")
    try:
        Decoder().receive(text)
    except SocketIODecodeError:
        pass


if __name__ == "__main__":
    main("socketio", check, linear,
         tokens=[b'"', b'\\"', b"\\", b"[", b"]", b"{", b"}", b",", b":", b"1", b'"a"', b"null", b" ", b"-"],
         prefixes=[b"2", b"2[", b'2["a",', b"3", b"51-[", b"0/admin,", b"2/x,1["])
    sys.exit(0)
