"""Argument recipes for the differential targets: the same argument, built afresh per twin.

A recipe is a small tuple; :func:`build` makes a new object from it, so that a twin
that writes into its argument (``mask_inplace``) cannot influence the other one.
Most recipes are valid buffers of every shape the contract names (bytes, bytearray,
memoryviews, unaligned slices, views of ``array('i')``, multi-dimensional casts);
some are not (non-contiguous views, read-only views where a writable one is needed,
str, int, None, lists) so that the twins are compared on bad arguments too.
"""

from __future__ import annotations

import array
from typing import Any

import atheris

from volleyio._speedups import _pure

try:
    from volleyio._speedups import _compiled
except ImportError as exc:  # pragma: no cover - the fuzz build always compiles it
    raise SystemExit(f"the compiled speedups are needed for the differential targets: {exc}") from None

PURE = _pure
COMPILED = _compiled

Recipe = tuple[Any, ...]


class _Index:
    """An object with __index__ (accepted wherever an int offset is)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"_Index({self.value})"


class _BytesSub(bytes):
    pass


class _StrSub(str):
    pass


def buffer_recipe(fdp: atheris.FuzzedDataProvider, raw: bytes, odd: bool = True) -> Recipe:
    """A recipe for ``raw`` as some buffer (mostly valid; ``odd`` allows invalid ones)."""
    kind = fdp.ConsumeIntInRange(0, 31 if odd else 14)
    return ("buf", kind % 19 if kind < 19 else kind % 4, raw)


def build(recipe: Recipe) -> Any:
    tag = recipe[0]
    if tag == "value":
        value = recipe[1]
        return _Index(value.value) if isinstance(value, _Index) else value
    if tag != "buf":
        raise ValueError(tag)
    kind, raw = recipe[1], recipe[2]
    if kind == 0:
        return bytes(raw)
    if kind == 1:
        return bytearray(raw)
    if kind == 2:
        return memoryview(bytes(raw))
    if kind == 3:
        return memoryview(bytearray(raw))
    if kind == 4:  # an unaligned slice of a larger buffer
        return memoryview(bytearray(b"\x00" + raw + b"\x00"))[1 : 1 + len(raw)]
    if kind == 5:  # a view of array('i'): items are 4 bytes
        usable = raw[: len(raw) - len(raw) % 4]
        return memoryview(array.array("i", usable))
    if kind == 6:  # a multi-dimensional, C-contiguous cast
        usable = raw[: len(raw) - len(raw) % 2]
        view = memoryview(bytearray(usable))
        return view.cast("B", [len(usable) // 2, 2]) if usable else view
    if kind == 7:
        return _BytesSub(raw)
    if kind == 8:  # read-only view of a writable buffer
        return memoryview(bytearray(raw)).toreadonly()
    if kind == 9:  # array itself (buffer protocol, not a memoryview)
        return array.array("B", raw)
    if kind == 10:  # empty slice
        return memoryview(bytearray(raw))[len(raw) :]
    if kind == 11:  # multi-byte item format view of bytes ('H')
        usable = raw[: len(raw) - len(raw) % 2]
        return memoryview(bytes(usable)).cast("H")
    if kind == 12:  # not contiguous
        return memoryview(bytearray(raw + raw))[::2]
    if kind == 13:
        return raw.decode("latin-1")
    if kind == 14:
        return None
    if kind == 15:
        return len(raw)
    if kind == 16:
        return list(raw)
    if kind == 17:  # not contiguous, read-only
        return memoryview(bytes(raw + raw))[::2]
    if kind == 18:
        return _StrSub(raw.decode("latin-1"))
    raise ValueError(kind)


def int_recipe(fdp: atheris.FuzzedDataProvider, low: int, high: int, odd: bool = True) -> Recipe:
    """An int mostly in [low, high]; sometimes an edge, a huge one or a non-int."""
    choice = fdp.ConsumeIntInRange(0, 15 if odd else 9)
    if choice <= 7:
        return ("value", fdp.ConsumeIntInRange(low, high))
    if choice == 8:
        return ("value", fdp.PickValueInList([low - 1, high + 1, -1, 0, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1,
                                               2**63, 2**64, -(2**63) - 1, 10**30, -(10**30)]))
    if choice == 9:
        return ("value", _Index(fdp.ConsumeIntInRange(low - 2, high + 2)))
    if choice == 10:
        return ("value", bool(fdp.ConsumeBool()))
    if choice == 11:
        return ("value", fdp.ConsumeIntInRange(low, high) + fdp.PickValueInList([0.0, 0.5, 0.9]))
    if choice == 12:
        return ("value", None)
    if choice == 13:
        return ("value", str(fdp.ConsumeIntInRange(low, high)))
    if choice == 14:
        return ("value", fdp.PickValueInList([float("nan"), float("inf"), -0.0, 1e300]))
    return ("value", _Index(fdp.PickValueInList([2**64, -(2**63) - 1, 2**31])))


def set_level(fdp: atheris.FuzzedDataProvider) -> int:
    """Pick the compiled twin's SIMD kernel (0 scalar .. 3 best) for this input."""
    return int(COMPILED._set_simd_level(fdp.ConsumeIntInRange(0, 3)))


def show(recipe: Recipe) -> str:
    if recipe[0] == "value":
        return repr(recipe[1])
    return f"buf(kind={recipe[1]}, {bytes(recipe[2])[:64]!r}{'...' if len(recipe[2]) > 64 else ''} len={len(recipe[2])})"
