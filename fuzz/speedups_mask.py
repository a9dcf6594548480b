"""Differential target: ``mask`` and ``mask_inplace``, compiled vs pure, every SIMD level.

Same result bytes (and type), same buffer contents after ``mask_inplace``, same
exception type and message for bad arguments (key length/type, offset type, buffer
kind), over every buffer shape of ``_twins``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    import _twins

from _harness import Finding, compare_twins, main, outcome


def _key_recipe(fdp: atheris.FuzzedDataProvider) -> _twins.Recipe:
    if fdp.ConsumeIntInRange(0, 7):
        raw = fdp.ConsumeBytes(4)
    else:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6))
    return _twins.buffer_recipe(fdp, raw)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    level = _twins.set_level(fdp)
    inplace = fdp.ConsumeBool()
    key = _key_recipe(fdp)
    offset = _twins.int_recipe(fdp, -9, 9) if fdp.ConsumeBool() else None
    payload = _twins.buffer_recipe(fdp, fdp.ConsumeBytes(fdp.remaining_bytes()))
    name = "mask_inplace" if inplace else "mask"
    results = []
    targets = []
    for twin in (_twins.PURE, _twins.COMPILED):
        buf = _twins.build(payload)
        args = [buf, _twins.build(key)]
        if offset is not None:
            args.append(_twins.build(offset))
        results.append(outcome(getattr(twin, name), *args))
        targets.append(bytes(memoryview(buf).cast("B")) if inplace and isinstance(buf, (bytearray, memoryview)) and
                       memoryview(buf).c_contiguous else None)
    call = f"{name}({_twins.show(payload)}, {_twins.show(key)}{', ' + _twins.show(offset) if offset else ''}) level={level}"
    compare_twins(name, results[0], results[1], call)
    if targets[0] != targets[1]:
        raise Finding("twin", f"{name}: buffer contents differ", f"call: {call}")
    # The contract itself, on the pure twin: XOR with the rotated key.
    pure = results[0]
    if name == "mask" and pure[0] == "ok":
        plain = (0, 1, 2, 3, 4, 7, 8, 9)  # buffers whose bytes are exactly the recipe's
        if key[0] == "buf" and key[1] in plain and payload[1] in plain:
            raw_key = bytes(key[2])
            src = bytes(payload[2])
            shift = int(_twins.build(offset)) % 4 if offset is not None else 0
            expected = bytes(b ^ raw_key[(i + shift) % 4] for i, b in enumerate(src))
            if pure[1] != expected:
                raise Finding("invariant", "mask: not data XOR rotated key", f"call: {call}")


if __name__ == "__main__":
    main("speedups_mask", check)
    sys.exit(0)
