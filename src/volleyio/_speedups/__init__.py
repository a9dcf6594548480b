"""The hot loops behind the WebSocket protocol: one API, two implementations.

``volleyio._speedups._compiled`` (Cython + C with runtime SIMD dispatch, built from
``ext/``) and ``volleyio._speedups._pure`` (standard library only) export the same
functions with the same results, down to close codes and error offsets.

Selection happens at import: the compiled module when it is importable, the pure
twin otherwise or when ``VOLLEYIO_NO_EXTENSIONS=1`` is set. ``IMPLEMENTATION``
names the one in use ("compiled" or "python").

Callers must look functions up on this module (``_speedups.parse_frames``), not
import them by name, so that :func:`select` (used by the test suite to run every
test over both implementations) takes effect.

Contract (see the docstrings in ``_pure`` for the details):

Every ``data``/``buffer``/``payload`` argument is read as raw bytes, whatever its
item format: a memoryview of an ``array('i')`` of 3 ints is 12 bytes, and every
length, offset and ``consumed`` count is in bytes. A non-contiguous buffer is copied
by ``mask``, is a TypeError for ``mask_inplace`` (it cannot be written in place) and a
BufferError everywhere else. ``offset`` must be an integer (``__index__``); a float
is a TypeError.

Bad arguments get the same exception, with the same message, from both twins, and
arguments are checked in parameter order (the first bad one is reported): a buffer
argument that is not bytes-like is ``TypeError("a bytes-like object is required, not
'T'")``; an integer argument (``offset``, ``opcode``, ``rsv``, ``max_payload``,
``allowed_rsv``) goes through ``__index__``, so a float is a TypeError, never
truncated; ``opcode`` outside 0..15 and ``rsv`` outside 0..7 are ValueError; flags
(``fin``, ``mask_required``, ``decode_text``) are taken by truth value; a mask ``key``
is any bytes-like object of exactly 4 bytes (else TypeError / ValueError). Only the
wording of a wrong argument *count* differs (CPython's vs Cython's TypeError).

``mask(data, key, offset=0) -> bytes``
    XOR ``data`` with the 4-byte ``key``, starting at key byte ``offset % 4``.
``mask_inplace(buffer, key, offset=0) -> None``
    The same, writing into a writable buffer (bytearray, writable memoryview).
``validate_utf8(data) -> int``
    ``-1`` if ``data`` is complete, valid UTF-8 (RFC 3629: no overlongs, no
    surrogates, nothing above U+10FFFF). Otherwise the offset of the first byte that
    cannot continue any valid UTF-8 string, or ``len(data)`` when the data is a valid
    but truncated prefix.
``Utf8Validator()``
    Incremental validation across fragments: ``feed(data) -> int`` returns ``-1``
    while everything fed so far is a valid prefix, else the offset *within this
    chunk* of the first bad byte (the validator then stays failed and every later
    ``feed`` returns 0); ``complete`` is True when no partial sequence is pending;
    ``reset()`` starts over.
``parse_frames(data, mask_required, max_payload, allowed_rsv, decode_text) -> (frames, consumed, error)``
    Parse every complete frame at the start of ``data``. ``frames`` is a list of
    ``(opcode, fin, rsv, payload)`` tuples with the payload unmasked; when
    ``decode_text`` is true, an unfragmented text frame with no RSV bits (opcode 1,
    fin 1, rsv 0) has its payload as ``str`` (invalid UTF-8 is error 1007).
    ``consumed`` is the number of bytes of ``data`` the returned frames used.
    ``error`` is ``None`` or ``(close_code, reason)`` for the first frame that breaks
    a rule; frames before it are still returned and ``consumed`` stops at it.
``encode_frame(opcode, payload, fin=True, rsv=0, mask_key=None) -> bytes``
    One frame, header and (masked when ``mask_key`` is given) payload.
``encode_message(message) -> bytes``
    One final, unmasked frame of a whole message: text (UTF-8) for ``str``, binary for
    any bytes-like object (a server's frame when no extension is negotiated).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import SpeedupsUnavailableWarning
from . import _pure

IMPLEMENTATION: str = "python"

_EXPORTS = (
    "mask", "mask_inplace", "validate_utf8", "Utf8Validator", "parse_frames", "encode_frame", "encode_message",
)


#: Why the compiled module could not be imported (None: it could, or was not tried).
LOAD_ERROR: str | None = None

#: Written by setup.py next to the extension when it builds (or fails to build) it.
BUILD_STATUS_FILE = Path(__file__).with_name("_build_status")


def _load_compiled() -> ModuleType | None:
    global LOAD_ERROR
    try:
        from . import _compiled
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) or "partially initialized" in str(exc):
            LOAD_ERROR = "no compiled module for this Python in the installation"
        else:  # there, but not loadable (wrong platform, missing symbol...)
            LOAD_ERROR = str(exc) or exc.__class__.__name__
        return None
    LOAD_ERROR = None
    return _compiled


def build_status() -> str | None:
    """What setup.py recorded about the compiled module for this installation:
    ``"built"``, ``"failed: <reason>"``, or None when no build was attempted (PyPy,
    ``VOLLEYIO_NO_EXTENSIONS=1`` at build time, a source checkout put on ``sys.path``).
    The compiled module "should be there" exactly when this is not None."""
    try:
        return BUILD_STATUS_FILE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def kernels() -> dict[str, str]:
    """The hot-loop kernels in use: ``{"mask": ..., "utf8": ...}``. The compiled module
    names the SIMD kernel its CPU dispatch chose (``"avx2"``, ``"sse2"``, ``"ssse3"``,
    ``"neon"`` or ``"scalar"``); the pure-Python twin says ``"python"``."""
    if IMPLEMENTATION == "compiled":
        info: dict[str, str] = available()["compiled"]._simd_info()
        return dict(info)
    return {"mask": "python", "utf8": "python"}


def _extensions_disabled() -> bool:
    return os.environ.get("VOLLEYIO_NO_EXTENSIONS", "") not in ("", "0")


def available() -> dict[str, ModuleType]:
    """The implementations that can be loaded here, by name.

    With ``VOLLEYIO_NO_EXTENSIONS=1`` only the pure-Python twin is offered, even when the
    compiled module is importable, so nothing in the process can end up using it.
    """
    found: dict[str, ModuleType] = {"python": _pure}
    compiled = None if _extensions_disabled() else _load_compiled()
    if compiled is not None:
        found["compiled"] = compiled
    return found


def select(name: str) -> str:
    """Switch this module to implementation ``name``; return the previous name."""
    global IMPLEMENTATION
    impls = available()
    if name not in impls:
        raise ImportError(f"volleyio speedups implementation {name!r} is not available")
    module = impls[name]
    previous = IMPLEMENTATION
    namespace: dict[str, Any] = globals()
    for attr in _EXPORTS:
        namespace[attr] = getattr(module, attr)
    IMPLEMENTATION = name
    return previous


mask = _pure.mask
mask_inplace = _pure.mask_inplace
validate_utf8 = _pure.validate_utf8
Utf8Validator = _pure.Utf8Validator
parse_frames = _pure.parse_frames
encode_frame = _pure.encode_frame
encode_message = _pure.encode_message

if "compiled" not in available():
    select("python")
    if not _extensions_disabled() and build_status() is not None:
        status = build_status()
        why = f"the build {status}" if status != "built" else f"built, but not importable: {LOAD_ERROR}"
        warnings.warn(
            f"volleyio's compiled speedups are not available ({why}); running on the pure-Python "
            "twins: same behaviour, lower speed. Reinstall with a C compiler to get them, or set "
            "VOLLEYIO_NO_EXTENSIONS=1 to use the pure twins without this warning.",
            SpeedupsUnavailableWarning,
            stacklevel=2,
        )
else:
    select("compiled")
