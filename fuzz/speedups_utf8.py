"""Differential target: ``validate_utf8`` and the incremental ``Utf8Validator``.

Both twins, every SIMD level: same offsets for the same bytes; validators fed the same
random splits (with ``reset()`` and ``complete`` checks in between) return the same
values at every step. Inputs are mutated UTF-8 (libFuzzer's bytes, plus multi-byte
forms spliced in) so that long valid runs reach the SIMD kernels. The pure twin is
also checked against CPython's decoder: -1 exactly when the bytes decode.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["volleyio"]):
    import _twins

from _harness import Finding, compare_twins, main, outcome

_PIECES = ["a" * 40, "é", "€", "𐍈", "\u07ff", "\uffff", "\U0010ffff", "日本語", " ", "\x00", "\x7f"]


def _text(fdp: atheris.FuzzedDataProvider) -> bytes:
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    out = bytearray()
    for _ in range(fdp.ConsumeIntInRange(0, 64)):
        if fdp.ConsumeIntInRange(0, 3) == 0:
            out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 4))
        else:
            out += fdp.PickValueInList(_PIECES).encode("utf-8") * fdp.ConsumeIntInRange(1, 8)
    return bytes(out)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    level = _twins.set_level(fdp)
    text = _text(fdp)
    recipe = _twins.buffer_recipe(fdp, text)
    call = f"validate_utf8({_twins.show(recipe)}) level={level}"
    pure = outcome(_twins.PURE.validate_utf8, _twins.build(recipe))
    comp = outcome(_twins.COMPILED.validate_utf8, _twins.build(recipe))
    compare_twins("validate_utf8", pure, comp, call)
    if recipe[1] == 0 and pure[0] == "ok":
        try:
            text.decode("utf-8")
            decodes = True
        except UnicodeDecodeError:
            decodes = False
        if decodes != (pure[1] == -1) or not -1 <= pure[1] <= len(text):
            raise Finding("invariant", "validate_utf8: disagrees with CPython's decoder", call)

    # Incremental: the same splits for both validators.
    validators = (_twins.PURE.Utf8Validator(), _twins.COMPILED.Utf8Validator())
    steps = []
    pos = 0
    while pos <= len(text) and len(steps) < 64:
        action = fdp.ConsumeIntInRange(0, 15)
        if action == 0:
            steps.append("reset")
            results = [outcome(v.reset) for v in validators]
        elif action == 1:
            steps.append("complete")
            results = [outcome(lambda v=v: v.complete) for v in validators]
        else:
            size = fdp.ConsumeIntInRange(0, 64) if action < 12 else fdp.ConsumeIntInRange(0, 4096)
            chunk = text[pos : pos + size]
            pos += max(size, 1)
            piece = _twins.buffer_recipe(fdp, chunk, odd=fdp.ConsumeIntInRange(0, 15) == 0)
            steps.append(f"feed({_twins.show(piece)})")
            results = [outcome(v.feed, _twins.build(piece)) for v in validators]
        compare_twins("Utf8Validator", results[0], results[1], f"level={level} steps: " + "; ".join(steps))
    final = [outcome(lambda v=v: v.complete) for v in validators]
    compare_twins("Utf8Validator.complete", final[0], final[1], f"level={level} steps: " + "; ".join(steps))


def linear(data: bytes) -> None:
    _twins.COMPILED.validate_utf8(data)
    _twins.PURE.validate_utf8(data)
    for twin in (_twins.PURE, _twins.COMPILED):
        validator = twin.Utf8Validator()
        for start in range(0, len(data), 3):
            validator.feed(data[start : start + 3])


if __name__ == "__main__":
    main("speedups_utf8", check, linear,
         tokens=[b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x90\x8d\x88", b"\xed\x9f\xbf", b"\xc3", b"\xe2\x82", b"\x80"])
    sys.exit(0)
