"""Differential target: ``parse_frames``, compiled vs pure.

The stream is either libFuzzer's raw bytes or frames built from them (every opcode,
fin, rsv, masked or not, minimal and non-minimal length forms, text payloads that are
mutated UTF-8), over random ``mask_required`` / ``max_payload`` / ``allowed_rsv`` /
``decode_text`` (including values of the wrong type). Both twins must return equal
``(frames, consumed, error)`` with the same payload types, or raise the same
exception. The stream is also fed in random splits the way the connection does
(keep the unconsumed tail, append the next piece): both twins, step by step.
"""

from __future__ import annotations

import struct
import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    import _twins

from _harness import Finding, compare_twins, main, outcome


def _frame(fdp: atheris.FuzzedDataProvider) -> bytes:
    opcode = fdp.PickValueInList([0, 1, 2, 8, 9, 10, 1, 2, 0, fdp.ConsumeIntInRange(0, 15)])
    fin = fdp.ConsumeIntInRange(0, 3) != 0
    rsv = fdp.PickValueInList([0, 0, 0, 4, 4, fdp.ConsumeIntInRange(0, 7)])
    masked = fdp.ConsumeBool()
    if fdp.ConsumeIntInRange(0, 2) == 0:
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    else:
        payload = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200)).encode("utf-8")
    if payload and fdp.ConsumeIntInRange(0, 3) == 0:
        cut = fdp.ConsumeIntInRange(0, len(payload) - 1)
        payload = payload[:cut] + bytes([fdp.ConsumeIntInRange(0, 255)]) + payload[cut + 1 :]
    n = len(payload)
    form = fdp.ConsumeIntInRange(0, 5)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if form == 4 or (n >= 126 and n < 0x10000 and form != 5):
        header = bytes((b0, mbit | 126)) + struct.pack("!H", n) if n < 0x10000 else bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    elif form == 5 or n >= 0x10000:
        header = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    else:
        header = bytes((b0, mbit | n))
    if masked:
        key = fdp.ConsumeBytes(4).ljust(4, b"\x00")
        return header + key + _twins.PURE.mask(payload, key)
    return header + payload


def _stream(fdp: atheris.FuzzedDataProvider) -> bytes:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    out = bytearray()
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        out += _frame(fdp)
    if out and fdp.ConsumeIntInRange(0, 3) == 0:
        pos = fdp.ConsumeIntInRange(0, len(out) - 1)
        out[pos] = fdp.ConsumeIntInRange(0, 255)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        del out[fdp.ConsumeIntInRange(0, len(out)) :]
    return bytes(out)


def _args(fdp: atheris.FuzzedDataProvider) -> list[_twins.Recipe]:
    odd = fdp.ConsumeIntInRange(0, 15) == 0
    mask_required = ("value", fdp.PickValueInList([True, False, 1, 0, None, "", "x"] if odd else [True, False]))
    if odd:
        max_payload = _twins.int_recipe(fdp, -2, 400)
        allowed_rsv = _twins.int_recipe(fdp, -1, 8)
    else:
        max_payload = ("value", fdp.PickValueInList([-1, 0, 1, 5, 125, 126, 200, 65535, 65536, 1 << 20, 1 << 62, 1 << 70,
                                                      fdp.ConsumeIntInRange(-1, 70000)]))
        allowed_rsv = ("value", fdp.PickValueInList([0, 4, 7, fdp.ConsumeIntInRange(0, 7)]))
    decode_text = ("value", fdp.PickValueInList([True, False, 1, None, "x"] if odd else [True, False]))
    return [mask_required, max_payload, allowed_rsv, decode_text]


def _same_payload_types(pure: tuple, comp: tuple, call: str) -> None:
    if pure[0] == comp[0] == "ok":
        pt = [type(f[3]) for f in pure[1][0]]
        ct = [type(f[3]) for f in comp[1][0]]
        if pt != ct:
            raise Finding("twin", "parse_frames: payload types differ", f"call: {call}\npure {pt}\ncompiled {ct}")


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    level = _twins.set_level(fdp)
    args = _args(fdp)
    stream = _stream(fdp)
    recipe = _twins.buffer_recipe(fdp, stream, odd=fdp.ConsumeIntInRange(0, 15) == 0)
    call = f"parse_frames({_twins.show(recipe)}, {', '.join(_twins.show(a) for a in args)}) level={level}"
    arg_values = [_twins.build(a) for a in args]
    pure = outcome(_twins.PURE.parse_frames, _twins.build(recipe), *arg_values)
    comp = outcome(_twins.COMPILED.parse_frames, _twins.build(recipe), *[_twins.build(a) for a in args])
    compare_twins("parse_frames", pure, comp, call)
    _same_payload_types(pure, comp, call)
    if pure[0] != "ok":
        return
    frames, consumed, error = pure[1]
    if not 0 <= consumed <= len(stream):
        raise Finding("invariant", "parse_frames: consumed out of range", call)
    if error is not None and error[0] not in (1002, 1007, 1009):
        raise Finding("invariant", f"parse_frames: close code {error[0]}", call)

    # Incremental, as the connection feeds it: the unconsumed tail plus the next read.
    buffers = [bytearray(), bytearray()]
    pos = 0
    steps = 0
    while pos < len(stream) and steps < 48:
        size = fdp.ConsumeIntInRange(1, 512) if fdp.remaining_bytes() else len(stream)
        piece = stream[pos : pos + size]
        pos += size
        steps += 1
        results = []
        for i, twin in enumerate((_twins.PURE, _twins.COMPILED)):
            buffers[i] += piece
            result = outcome(twin.parse_frames, bytes(buffers[i]), *arg_values)
            results.append(result)
            if result[0] == "ok":
                del buffers[i][: result[1][1]]
        step_call = f"{call}\nincremental step {steps}, fed up to {pos}"
        compare_twins("parse_frames(incremental)", results[0], results[1], step_call)
        _same_payload_types(results[0], results[1], step_call)
        if results[0][0] != "ok" or results[0][1][2] is not None:
            break


def linear(data: bytes) -> None:
    for twin in (_twins.PURE, _twins.COMPILED):
        for mask_required in (False, True):
            twin.parse_frames(data, mask_required, -1, 7, True)


if __name__ == "__main__":
    main("speedups_frames", check, linear,
         tokens=[b"\x81\x80abcd", b"\x82\x80abcd", b"\x01\x80abcd", b"\x00\x80abcd", b"\x81\x00", b"\x01\x00",
                 b"\x00\x00", b"\x89\x00", b"\x81\x02\xc3\xa9", b"\x81\x7e\x00\x02ab"])
    sys.exit(0)
