"""Differential target: ``encode_frame`` and ``encode_message``, compiled vs pure.

Valid and invalid arguments alike (opcode/rsv out of range or not ints, payload and
mask key of every buffer shape or none, ``fin`` of any truthiness): same bytes or the
same exception type and message. Valid frames must parse back (``parse_frames`` of
the pure twin) to what was encoded.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    import _twins

from _harness import Finding, compare_twins, main, outcome


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    level = _twins.set_level(fdp)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        # encode_message(str | bytes-like)
        if fdp.ConsumeBool():
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70000))
            try:  # lone surrogates too: neither twin may encode them
                text = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
            message = ("value", text)
        else:
            message = _twins.buffer_recipe(fdp, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70000)))
        results = [outcome(t.encode_message, _twins.build(message)) for t in (_twins.PURE, _twins.COMPILED)]
        compare_twins("encode_message", results[0], results[1], f"encode_message({_twins.show(message)}) level={level}")
        return
    opcode = _twins.int_recipe(fdp, 0, 15)
    rsv = _twins.int_recipe(fdp, 0, 7)
    fin = ("value", fdp.PickValueInList([True, False, 0, 1, 2, None, "", "x", 0.0]))
    nargs = fdp.ConsumeIntInRange(2, 5)
    if fdp.ConsumeIntInRange(0, 3):
        key = _twins.buffer_recipe(fdp, fdp.ConsumeBytes(4), odd=fdp.ConsumeIntInRange(0, 7) == 0)
    else:
        key = ("value", None) if fdp.ConsumeBool() else _twins.buffer_recipe(fdp, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6)))
    size = fdp.ConsumeIntInRange(0, 70000) if fdp.ConsumeIntInRange(0, 15) == 0 else fdp.ConsumeIntInRange(0, 300)
    payload = _twins.buffer_recipe(fdp, (fdp.ConsumeBytes(size) * 300)[:size])
    recipes = [opcode, payload, fin, rsv, key][:nargs]
    use_keywords = fdp.ConsumeBool()
    results = []
    for twin in (_twins.PURE, _twins.COMPILED):
        args = [_twins.build(r) for r in recipes]
        if use_keywords and nargs > 2:
            names = ["fin", "rsv", "mask_key"][: nargs - 2]
            results.append(outcome(twin.encode_frame, *args[:2], **dict(zip(names, args[2:]))))
        else:
            results.append(outcome(twin.encode_frame, *args))
    call = f"encode_frame({', '.join(_twins.show(r) for r in recipes)}) keywords={use_keywords} level={level}"
    compare_twins("encode_frame", results[0], results[1], call)
    if results[0][0] == "ok" and nargs >= 4 and type(recipes[0][1]) is int and type(recipes[3][1]) is int:
        frame = results[0][1]
        masked = nargs == 5 and recipes[4][0] == "buf"
        parsed = _twins.PURE.parse_frames(frame, masked, -1, 7, False)
        frames, consumed, error = parsed
        opc = recipes[0][1]
        if error is None and opc in (0, 1, 2) and (consumed != len(frame) or len(frames) != 1):
            raise Finding("invariant", "encode_frame: does not parse back as one frame", f"call: {call}\nparsed: {parsed!r:.300}")


def linear(data: bytes) -> None:
    for twin in (_twins.PURE, _twins.COMPILED):
        twin.encode_frame(2, data, True, 0, b"abcd")
        twin.encode_message(data)


if __name__ == "__main__":
    main("speedups_encode", check, linear)
    sys.exit(0)
