"""Pure-Python twins of the compiled hot loops. Same signatures, same results.

This module is also the reference the compiled one is tested against, so clarity
beats speed here wherever the two conflict; it still avoids per-byte Python loops.
"""

from __future__ import annotations

import codecs
import operator
import struct
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]
Frame = tuple[int, bool, int, Union[bytes, str]]
FrameError = tuple[int, str]

_utf8_decode = codecs.utf_8_decode
_index = operator.index
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from

# Opcodes RFC 6455 section 5.2 defines; everything else is reserved.
_KNOWN_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))


# The message CPython's PyBUF_SIMPLE request gives, which is what the compiled twin raises.
_NOT_C_CONTIGUOUS = "memoryview: underlying buffer is not C-contiguous"
# What a memoryview cast of a non-contiguous view raises (mask_inplace's TypeError).
_CAST_NON_CONTIGUOUS = "memoryview: casts are restricted to C-contiguous views"


def _not_bytes_like(obj: object) -> TypeError:
    """The TypeError both twins raise for an argument that is not a buffer."""
    return TypeError(f"a bytes-like object is required, not '{type(obj).__name__}'")


def _check_key(key: Buffer) -> bytes:
    """The 4 bytes of a mask key given as any bytes-like object (copied if need be)."""
    if type(key) is not bytes:
        try:
            view = memoryview(key)
        except TypeError:
            raise _not_bytes_like(key) from None
        key = view.tobytes()
    if len(key) != 4:
        raise ValueError("a WebSocket mask key is exactly 4 bytes")
    return key


def _byte_view(data: Buffer) -> memoryview:
    """``data`` as a flat view of unsigned bytes, so that len() and slices count bytes.

    A memoryview of, say, an ``array('i')`` has one item per int; the compiled twin
    always works on the byte length, so the pure one must too. A non-contiguous buffer
    raises BufferError, as the compiled twin's PyBUF_SIMPLE buffer request does.
    """
    try:
        view = memoryview(data)
    except TypeError:
        raise _not_bytes_like(data) from None
    if not view.c_contiguous:
        raise BufferError(_NOT_C_CONTIGUOUS)
    return view.cast("B")


def mask(data: Buffer, key: Buffer, offset: int = 0) -> bytes:
    """Return ``data`` XORed with ``key`` repeated, starting at key byte ``offset % 4``."""
    if type(data) is not bytes and type(data) is not bytearray:
        try:
            view = memoryview(data)
        except TypeError:
            # Not a buffer at all: accept whatever bytes() does, like the compiled twin.
            data = bytes(data)
        else:
            # A non-contiguous view is copied (the compiled twin does the same).
            data = view.cast("B") if view.c_contiguous else view.tobytes()
    key = _check_key(key)
    if type(offset) is not int:
        # Rejects floats (TypeError) and accepts anything with __index__, like the compiled twin.
        offset = _index(offset)
    n = len(data)
    if n == 0:
        return b""
    shift = offset % 4
    if shift:
        key = key[shift:] + key[:shift]
    stream = key * (n // 4 + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(stream[:n], "little")
    return value.to_bytes(n, "little")


def mask_inplace(buffer: Union[bytearray, memoryview], key: Buffer, offset: int = 0) -> None:
    """XOR a writable buffer with ``key`` in place, starting at key byte ``offset % 4``."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise _not_bytes_like(buffer) from None
    if not view.c_contiguous:
        # It cannot be written in one go: TypeError (what a cast says), in both twins.
        raise TypeError(_CAST_NON_CONTIGUOUS)
    if view.readonly:
        raise TypeError("mask_inplace needs a writable buffer")
    view = view.cast("B")
    view[:] = mask(view, key, offset)


def _first_bad_byte(exc: UnicodeDecodeError, length: int) -> int:
    # CPython reports the maximal valid subpart [start, end); the byte that broke it
    # is at ``end`` unless the lead byte itself was impossible.
    if exc.reason == "invalid start byte":
        return int(exc.start)
    if exc.reason == "unexpected end of data":
        return length
    return int(exc.end)


def validate_utf8(data: Buffer) -> int:
    """-1 if valid and complete; else the offset of the first bad byte (len if truncated)."""
    if type(data) is not bytes:
        # The offsets in a UnicodeDecodeError are byte offsets; so must the length be.
        data = _byte_view(data)
    try:
        _utf8_decode(data, "strict", True)
    except UnicodeDecodeError as exc:
        return _first_bad_byte(exc, len(data))
    return -1


class Utf8Validator:
    """Validate UTF-8 arriving in pieces, failing at the first bad byte of any piece.

    Not thread-safe per object: feed one validator from one thread at a time.
    """

    __slots__ = ("_pending", "_failed")

    def __init__(self) -> None:
        self._pending = b""
        self._failed = False

    @property
    def complete(self) -> bool:
        """True when no multi-byte sequence is waiting for its remaining bytes."""
        return not self._pending and not self._failed

    def reset(self) -> None:
        self._pending = b""
        self._failed = False

    def feed(self, data: Buffer) -> int:
        """-1 while the stream so far is a valid prefix; else the bad byte's offset in ``data``."""
        if self._failed:
            return 0
        pending = self._pending
        if type(data) is not bytes:
            # Slicing and len() below must count bytes, whatever the buffer's format.
            data = _byte_view(data)
        chunk = pending + data if pending else data
        try:
            _, used = _utf8_decode(chunk, "strict", False)
        except UnicodeDecodeError as exc:
            self._failed = True
            self._pending = b""
            return max(_first_bad_byte(exc, len(chunk)) - len(pending), 0)
        rest = bytes(chunk[used:])
        if len(rest) >= 2 and rest[0] == 0xED and rest[1] > 0x9F:
            # CPython's incremental decoder defers this one case (the first two bytes
            # of a surrogate) to the next call; it can never continue, so fail now.
            self._failed = True
            self._pending = b""
            return max(used + 1 - len(pending), 0)
        self._pending = rest
        return -1


def parse_frames(
    data: Buffer,
    mask_required: bool,
    max_payload: int,
    allowed_rsv: int,
    decode_text: bool,
) -> tuple[list[Frame], int, FrameError | None]:
    """Parse all complete frames at the start of ``data``.

    ``mask_required`` is True on the server side (client frames must be masked) and
    False on the client side (server frames must not be). ``max_payload`` bounds a
    single frame's payload length (negative: no bound); a longer frame is error 1009
    as soon as its header is complete, before its payload has arrived.
    ``allowed_rsv`` is a bit mask of the RSV bits (0x4 = RSV1, 0x2 = RSV2, 0x1 =
    RSV3) that negotiated extensions may set on the *first* frame of a data message
    (bits above ``0x7`` are ignored); continuation and control frames must never carry
    RSV bits. ``mask_required`` and ``decode_text`` are taken by truth value.
    """
    # Arguments are checked in parameter order, as in the compiled twin.
    view = _byte_view(data)
    mask_required = True if mask_required else False
    if type(max_payload) is not int:
        max_payload = _index(max_payload)
    if type(allowed_rsv) is not int:
        allowed_rsv = _index(allowed_rsv)
    decode_text = True if decode_text else False
    end = len(view)
    pos = 0
    frames: list[Frame] = []
    while end - pos >= 2:
        b0 = view[pos]
        b1 = view[pos + 1]
        fin = bool(b0 & 0x80)
        rsv = (b0 >> 4) & 0x7
        opcode = b0 & 0x0F
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        header = 2
        if length == 126:
            if end - pos < 4:
                break
            (length,) = _unpack_h(view, pos + 2)
            header = 4
        elif length == 127:
            if end - pos < 10:
                break
            (length,) = _unpack_q(view, pos + 2)
            header = 10
            if length >> 63:
                return frames, pos, (1002, "frame length has the most significant bit set")

        if opcode not in _KNOWN_OPCODES:
            return frames, pos, (1002, f"reserved opcode {opcode:#x}")
        if opcode >= 0x8:
            if not fin:
                return frames, pos, (1002, "fragmented control frame")
            if length > 125:
                return frames, pos, (1002, "control frame payload longer than 125 bytes")
            if rsv:
                return frames, pos, (1002, "reserved bits set on a control frame")
        elif rsv:
            if opcode == 0x0:
                return frames, pos, (1002, "reserved bits set on a continuation frame")
            if rsv & ~allowed_rsv:
                return frames, pos, (1002, "reserved bits set without a negotiated extension")
        if masked != mask_required:
            if mask_required:
                return frames, pos, (1002, "client frame is not masked")
            return frames, pos, (1002, "server frame is masked")
        if 0 <= max_payload < length:
            return frames, pos, (1009, "frame payload exceeds the size limit")

        key_len = 4 if masked else 0
        total = header + key_len + length
        if end - pos < total:
            break
        start = pos + header + key_len
        if masked:
            payload: bytes = mask(view[start : start + length], view[pos + header : start])
        else:
            payload = bytes(view[start : start + length])
        if decode_text and opcode == 0x1 and fin and not rsv:
            try:
                text = _utf8_decode(payload, "strict", True)[0]
            except UnicodeDecodeError:
                return frames, pos, (1007, "invalid UTF-8 in text frame")
            frames.append((opcode, fin, rsv, text))
        else:
            frames.append((opcode, fin, rsv, payload))
        pos += total
    return frames, pos, None


def encode_frame(
    opcode: int,
    payload: Buffer,
    fin: bool = True,
    rsv: int = 0,
    mask_key: Buffer | None = None,
) -> bytes:
    """Serialize one frame with the shortest length encoding."""
    # Arguments are checked in parameter order, as in the compiled twin. Integers may be
    # anything with __index__ (a float is a TypeError, never truncated).
    if type(opcode) is not int:
        opcode = _index(opcode)
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode out of range: {opcode}")
    if type(payload) is not bytes:
        payload = _byte_view(payload)
    b0 = (0x80 if fin else 0) | opcode
    if type(rsv) is not int:
        rsv = _index(rsv)
    if not 0 <= rsv <= 0x7:
        raise ValueError(f"rsv out of range: {rsv}")
    b0 |= rsv << 4
    key = None if mask_key is None else _check_key(mask_key)
    length = len(payload)
    mask_bit = 0x80 if key is not None else 0
    if length < 126:
        header = bytes((b0, mask_bit | length))
    elif length < 0x10000:
        header = bytes((b0, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((b0, mask_bit | 127)) + length.to_bytes(8, "big")
    if key is None:
        return header + bytes(payload)
    return header + key + mask(payload, key)


def encode_message(message: str | Buffer) -> bytes:
    """One final, unmasked frame carrying a whole message: text for ``str``, binary otherwise.

    The server's everyday frame (no extension, no mask): ``encode_frame(1,
    message.encode("utf-8"))`` for text, ``encode_frame(2, message)`` for bytes-like.
    """
    if isinstance(message, str):
        return encode_frame(0x1, message.encode("utf-8"))
    return encode_frame(0x2, message)
