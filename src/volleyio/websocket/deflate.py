"""permessage-deflate (RFC 7692), sans-I/O, on the standard library's :mod:`zlib`.

Public API
==========

``ServerPerMessageDeflateFactory(...)``
    The server side of the negotiation (``negotiate(offers)``), implementing
    :class:`~volleyio.websocket.extensions.ServerExtensionFactory`. Defaults follow
    LIMITS.md: window bits 12 (``server_max_window_bits`` and, when the client offers
    ``client_max_window_bits``, that too), memLevel 5, threshold 1 KiB. Whether the
    server enables compression at all is decided by whoever configures the server
    (off by default).
``ClientPerMessageDeflateFactory(...)``
    The client side (``offer()`` / ``accept(params)``).
``PerMessageDeflate``
    The negotiated extension bound to one connection: ``decode_fragment`` /
    ``encode_message`` as in :mod:`volleyio.websocket.extensions`.
``PreparedMessage(payload, opcode=None)``
    A server-to-client message compressed and framed once, written to many
    connections: ``prepared.frames_for(extension)`` returns the complete wire bytes
    (one unmasked frame) for a connection whose negotiated permessage-deflate
    extension is ``extension`` (``None`` when the connection has none). Connections
    with ``server_no_context_takeover`` in force share one cached compressed frame
    per (window bits, memLevel, level) variant; connections with context takeover get
    a per-connection compression through their own compressor (so the bytes must be
    sent on that connection, in order, right away -- the compressor state advanced).

Negotiation notes
=================

* A malformed offer (unknown or duplicated parameters, a value where none is allowed
  or a missing or invalid one, window bits outside 8..15) is *declined* by default:
  RFC 7692 section 7.1 says the server MUST decline such an offer, so
  negotiation moves on to the client's next offer, or completes without the
  extension. ``reject_malformed_offers=True`` fails the handshake with
  :class:`HandshakeError` (400) instead, as ws does. Either way, a
  ``Sec-WebSocket-Extensions`` header that does not parse at all (an RFC 6455
  section 9.1 grammar error) is a 400 from the handshake, before any factory runs.
  The client side has no such choice: a malformed or unexpected *response* fails
  the connection (RFC 7692 section 7.1: the client MUST fail the WebSocket
  connection), as :meth:`ClientPerMessageDeflateFactory.accept` does.
* Window bits 8: zlib (>= 1.2.9, madler/zlib#171) refuses ``wbits=-8`` for raw
  deflate *compression*. We still accept a negotiated 8 for our own compressor and
  compress with 9: zlib limits match distances to ``MAX_DIST = w_size - 262``, which
  is 250 bytes for a 512-byte window -- every back-reference fits the 256-byte window
  the peer promised to keep, so the stream is valid for an 8-bit decoder (tested by
  decoding with ``wbits=-8`` one output byte at a time). Decompression with 8 is
  native. (websockets refuses 8 for its own compressor; ws accepts it because Node
  turns a raw-deflate windowBits of 8 into 9 itself, nodejs/node#16511 -- the same
  reasoning.)
* Prepared messages pay off only where ``server_no_context_takeover`` is in force;
  the server can always ask for it (``server_no_context_takeover=True``), at the
  cost of compression ratio on streams of similar messages.

Framing
=======

RSV1 on the first frame of a compressed message only; control frames are never
compressed (``encode_message`` returns control payloads unchanged with no RSV bits).
Fragments are inflated one by one through a ``zlib.decompressobj`` and the
``00 00 ff ff`` tail is fed after the final fragment. Inflation is bounded:
``decompress(data, max_length=remaining + 1)`` -- one byte more than the budget, so
getting that extra byte proves the message is too big (1009) while a message that
inflates to exactly the budget is delivered; memory growth is bounded by the budget,
not the bomb. A sender that ends a message with a ``BFINAL`` block (RFC 7692 section
7.2.3.3) is accepted; data after the end of the stream is a protocol error.

Memory per connection (``benchmarks/deflate.py``: 1,000 server connections that each
received one compressed 4 KiB JSON message and sent one; zlib 1.2.13, CPython 3.11;
zlib's state is allocated through ``PyMem_RawMalloc``, so tracemalloc sees it; RSS
measured in a fresh process):

==========================================================  ===========  =========
configuration                                               tracemalloc  RSS
==========================================================  ===========  =========
no compression (the connection object alone)                1.9 KiB      1.1 KiB
window 12 / memLevel 5, context takeover (browser offer)    51.4 KiB     50.3 KiB
same, client did not offer ``client_max_window_bits``       79.4 KiB     56.6 KiB
window 15 / memLevel 8, context takeover                    303.4 KiB    118.1 KiB
window 12 / memLevel 5, no context takeover either way      2.2 KiB      1.4 KiB
==========================================================  ===========  =========

zlib's own formulas agree: deflate needs ``2^(wbits+2) + 2^(memLevel+9)`` bytes plus
~6 KiB of state (12/5: 32 KiB + 6; 15/8: 256 KiB + 6), inflate ``2^wbits`` plus ~7 KiB
(the inflate window is allocated on first use). RSS stays below the allocation for
15/8 because a 4 KiB message touches only part of the 32 KiB window arrays. Without
context takeover the zlib objects are freed after every message, so an idle
connection costs nothing extra; with it, the state lives as long as the connection.
The decompressor's window is the peer's choice unless the server can bound it
(``client_max_window_bits``; ``require_client_max_window_bits=True`` declines
offers that don't allow that).
"""

from __future__ import annotations

import sys
import zlib
from typing import TYPE_CHECKING, Literal, Optional, Union

from .. import _speedups
from ..errors import HandshakeError, ProtocolError
from .extensions import ExtensionParams, serialize_extension

if TYPE_CHECKING:
    from .connection import WebSocketConnection

__all__ = [
    "EXTENSION_NAME",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "ClientPerMessageDeflateFactory",
    "PreparedMessage",
    "DEFAULT_WINDOW_BITS",
    "DEFAULT_MEM_LEVEL",
    "DEFAULT_THRESHOLD",
]

EXTENSION_NAME = "permessage-deflate"
#: LIMITS.md: "PMCE: server off; on: window 12, memLevel 5, threshold 1 KiB".
DEFAULT_WINDOW_BITS = 12
DEFAULT_MEM_LEVEL = 5
DEFAULT_THRESHOLD = 1024
DEFAULT_COMPRESSION_LEVEL = 6  # zlib's own default: the usual speed/ratio knee

RSV1 = 0x4
_OPCODE_TEXT = 0x1
_OPCODE_BINARY = 0x2
_OPCODE_CONTROL_MIN = 0x8
# RFC 7692 section 7.2.2: the receiver appends this to every compressed message.
_TAIL = b"\x00\x00\xff\xff"
_WINDOW_BITS_VALUES = {str(bits): bits for bits in range(8, 16)}
# decompress(max_length=...) takes a Py_ssize_t; ``remaining + 1`` must not overflow.
_MAX_INFLATE_BUDGET = sys.maxsize - 1
# Unfragmented messages up to this many wire bytes take decode_fragment's fast path.
_SMALL_MESSAGE = 4096

_PARAM_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_PARAM_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_PARAM_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_PARAM_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"


def _compressor_window_bits(window_bits: int) -> int:
    """The wbits to give zlib for a negotiated window: 8 becomes 9 (see module docstring:
    zlib rejects raw wbits=8, and its 9-bit compressor never reaches further than 250
    bytes back, so its output is valid for a peer keeping only 256 bytes)."""
    return 9 if window_bits == 8 else window_bits


def _check_window_bits(name: str, value: int, low: int = 8) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 15:
        raise ValueError(f"{name} must be an integer between {low} and 15, got {value!r}")


def _check_compressor_settings(mem_level: int, compression_level: int, threshold: int) -> None:
    # Checked when a factory is configured, so a bad setting fails at startup rather
    # than as an internal error in the middle of a handshake.
    if not 1 <= mem_level <= 9:
        raise ValueError(f"mem_level must be 1..9, got {mem_level!r}")
    if not -1 <= compression_level <= 9:
        raise ValueError(f"compression_level must be -1..9, got {compression_level!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")


class _Params:
    """The four RFC 7692 parameters as read from one offer or response.

    ``client_max_window_bits`` is ``True`` when present without a value (only legal in
    an offer)."""

    __slots__ = (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )

    def __init__(self) -> None:
        self.server_no_context_takeover = False
        self.client_no_context_takeover = False
        self.server_max_window_bits: int | None = None
        self.client_max_window_bits: int | Literal[True] | None = None


def _parse_params(params: ExtensionParams, *, is_offer: bool) -> _Params:
    """Read RFC 7692 parameters strictly; ``ValueError`` names the first problem."""
    parsed = _Params()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f"duplicate parameter {name}")
        seen.add(name)
        if name in (_PARAM_SERVER_NO_CONTEXT_TAKEOVER, _PARAM_CLIENT_NO_CONTEXT_TAKEOVER):
            if value is not None:
                raise ValueError(f"{name} takes no value, got {value!r}")
            setattr(parsed, name, True)
        elif name == _PARAM_SERVER_MAX_WINDOW_BITS:
            # RFC 7692 section 7.1.2.1: a value is required in offers and responses.
            if value not in _WINDOW_BITS_VALUES:
                raise ValueError(f"{name} must be 8..15, got {value!r}")
            parsed.server_max_window_bits = _WINDOW_BITS_VALUES[value]
        elif name == _PARAM_CLIENT_MAX_WINDOW_BITS:
            # Section 7.1.2.2: valueless only in an offer ("I support the parameter").
            if value is None and is_offer:
                parsed.client_max_window_bits = True
            elif value in _WINDOW_BITS_VALUES:
                parsed.client_max_window_bits = _WINDOW_BITS_VALUES[value]
            else:
                raise ValueError(f"{name} must be 8..15, got {value!r}")
        else:
            raise ValueError(f"unknown parameter {name}")
    return parsed


class PerMessageDeflate:
    """permessage-deflate bound to one connection (implements ``Extension``).

    ``local_*`` parameters govern what this endpoint sends (its compressor),
    ``remote_*`` what it receives (its decompressor). ``*_max_window_bits`` are the
    negotiated values (8..15); the compressor uses 9 for a negotiated 8.
    """

    name = EXTENSION_NAME
    rsv_mask = RSV1

    __slots__ = (
        "is_server",
        "local_no_context_takeover",
        "remote_no_context_takeover",
        "local_max_window_bits",
        "remote_max_window_bits",
        "mem_level",
        "compression_level",
        "threshold",
        "_compressor",
        "_decompressor",
        "_stream_ended",
    )

    def __init__(
        self,
        *,
        is_server: bool,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        mem_level: int = DEFAULT_MEM_LEVEL,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        _check_window_bits("local_max_window_bits", local_max_window_bits)
        _check_window_bits("remote_max_window_bits", remote_max_window_bits)
        _check_compressor_settings(mem_level, compression_level, threshold)
        self.is_server = is_server
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.mem_level = mem_level
        self.compression_level = compression_level
        self.threshold = threshold
        # Created lazily: a connection that never sends (or receives) a compressed
        # message never pays for the zlib state; without context takeover they are
        # dropped after every message.
        self._compressor: Optional["zlib._Compress"] = None
        self._decompressor: Optional["zlib._Decompress"] = None
        # The current incoming message's deflate stream reached a BFINAL block.
        self._stream_ended = False

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(is_server={self.is_server}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"mem_level={self.mem_level}, threshold={self.threshold})"
        )

    @property
    def compression_variant(self) -> tuple[int, int, int]:
        """What determines the compressed bytes of a message under
        no-context-takeover: (zlib wbits, memLevel, level). Key of PreparedMessage's cache."""
        return (_compressor_window_bits(self.local_max_window_bits), self.mem_level, self.compression_level)

    # -- receiving ---------------------------------------------------------------

    def _new_decompressor(self, window: bytes = b"") -> "zlib._Decompress":
        if window:
            return zlib.decompressobj(wbits=-self.remote_max_window_bits, zdict=window)
        return zlib.decompressobj(wbits=-self.remote_max_window_bits)

    def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
        """Inflate one fragment; at most ``max_length`` bytes may come out (else 1009)."""
        if first and fin and rsv & RSV1 and len(payload) <= _SMALL_MESSAGE and 0 <= max_length <= _MAX_INFLATE_BUDGET:
            # The common case -- one small compressed frame -- in one decompress call
            # with the tail appended (copying a few hundred bytes is cheaper than a
            # second call). Same rules as the general path below.
            decompressor = self._decompressor
            if decompressor is None or self.remote_no_context_takeover:
                decompressor = self._decompressor = zlib.decompressobj(wbits=-self.remote_max_window_bits)
            try:
                output = decompressor.decompress(payload + _TAIL, max_length + 1)
            except zlib.error as exc:
                self._decompressor = None
                raise ProtocolError(f"invalid compressed data: {exc}", 1002) from None
            if len(output) > max_length:
                self._decompressor = None
                raise ProtocolError("message exceeds the size limit after decompression", 1009)
            if decompressor.eof:
                # BFINAL inside the payload: only our own tail may follow it (unused);
                # BFINAL on a stored block whose LEN/NLEN is our tail: nothing follows.
                if decompressor.unused_data not in (b"", _TAIL):
                    self._decompressor = None
                    raise ProtocolError("data after the end of the compressed stream", 1002)
                self._after_stream_end(output)
            elif self.remote_no_context_takeover:
                self._decompressor = None
            return output
        if not rsv & RSV1:
            # Not compressed: the connection doesn't call us for these, but honour the
            # contract if someone does.
            if len(payload) > max_length:
                raise ProtocolError("message exceeds the size limit", 1009)
            return payload
        budget = min(max(max_length, 0), _MAX_INFLATE_BUDGET)
        if first:
            self._stream_ended = False
            if self._decompressor is None or self.remote_no_context_takeover:
                self._decompressor = self._new_decompressor()
        decompressor = self._decompressor
        if decompressor is None:  # a continuation without a first frame: caller bug
            raise ProtocolError("continuation of a compressed message that never started", 1002)
        try:
            if self._stream_ended:
                # The message's deflate stream already ended with a BFINAL block; only
                # empty fragments may follow.
                if payload:
                    raise ProtocolError("data after the end of the compressed stream", 1002)
                output = b""
            else:
                # +1: receiving budget+1 bytes proves the message is too big; receiving
                # budget bytes or fewer means zlib consumed everything (it only stops
                # early when the output cap is hit), so the message fits exactly.
                output = decompressor.decompress(payload, budget + 1)
                if len(output) > budget:
                    raise ProtocolError("message exceeds the size limit after decompression", 1009)
                if decompressor.eof:
                    self._end_of_stream(decompressor, output)
            if fin:
                if not self._stream_ended:
                    remaining = budget - len(output)
                    tail_output = decompressor.decompress(_TAIL, remaining + 1)
                    if len(tail_output) > remaining:
                        raise ProtocolError("message exceeds the size limit after decompression", 1009)
                    if tail_output:
                        output += tail_output
                    if decompressor.eof:
                        # The payload's last block was a BFINAL stored block whose
                        # LEN/NLEN is our tail: legal, odd; the stream ended exactly.
                        if decompressor.unused_data:
                            raise ProtocolError("data after the end of the compressed stream", 1002)
                        self._after_stream_end(output)
                if self.remote_no_context_takeover:
                    self._decompressor = None  # free ~2^wbits + 7 KiB until the next message
        except zlib.error as exc:
            self._decompressor = None
            raise ProtocolError(f"invalid compressed data: {exc}", 1002) from None
        except ProtocolError:
            # The stream is out of step with the peer's compressor now; the connection
            # fails anyway -- and the inflate state (plus any window) is freed at once.
            self._decompressor = None
            raise
        return output

    def _end_of_stream(self, decompressor: "zlib._Decompress", output: bytes) -> None:
        # RFC 7692 7.2.3.3: a message may end with a BFINAL block. Whatever follows must
        # be nothing (then the caller's tail goes unused) -- checked here for this call.
        if decompressor.unused_data:
            raise ProtocolError("data after the end of the compressed stream", 1002)
        self._stream_ended = True
        self._after_stream_end(output)

    def _after_stream_end(self, output: bytes) -> None:
        # An ended zlib stream accepts no more input. With context takeover the peer may
        # still refer to this window in its next message: start a new decompressor
        # primed with what we still have (this call's output). References further back
        # than that fail loudly (zlib "distance too far back" -> 1002), never silently.
        if self.remote_no_context_takeover:
            self._decompressor = None
        else:
            window = output[-(1 << self.remote_max_window_bits) :]
            self._decompressor = self._new_decompressor(window)

    # -- sending -----------------------------------------------------------------

    def should_compress(self, payload_length: int, opcode: int, compress: bool | None) -> bool:
        """The per-message policy: never control frames; ``compress`` overrides; else
        the size threshold (payloads shorter than ``threshold`` go out as they are)."""
        if opcode >= _OPCODE_CONTROL_MIN:
            return False
        if compress is None:
            return payload_length >= self.threshold
        return compress

    def _new_compressor(self) -> "zlib._Compress":
        return zlib.compressobj(
            self.compression_level,
            zlib.DEFLATED,
            -_compressor_window_bits(self.local_max_window_bits),
            self.mem_level,
        )

    def encode_message(self, payload: bytes, opcode: int, compress: bool | None) -> tuple[bytes, int]:
        """Compress one whole message; returns (wire payload, RSV bits of its first frame)."""
        if not self.should_compress(len(payload), opcode, compress):
            return payload, 0
        compressor = self._compressor
        if compressor is None or self.local_no_context_takeover:
            compressor = self._new_compressor()
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        # RFC 7692 7.2.1: drop the 00 00 ff ff that the sync flush ends with.
        if data[-4:] != _TAIL:  # pragma: no cover - zlib guarantees it
            raise AssertionError("zlib sync flush did not end with 00 00 ff ff")
        # Keep the compressor only when its window carries over to the next message.
        self._compressor = None if self.local_no_context_takeover else compressor
        return data[:-4], RSV1


def _compress_once(payload: bytes, variant: tuple[int, int, int]) -> bytes:
    wbits, mem_level, level = variant
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _deflate_extension_of(connection: "WebSocketConnection") -> PerMessageDeflate | None:
    """The connection's permessage-deflate extension, refusing what can't share bytes."""
    if connection.role.value != "server":
        raise ValueError("prepared messages are server-to-client only (client frames are masked)")
    found: PerMessageDeflate | None = None
    for extension in connection.extensions:
        if isinstance(extension, PerMessageDeflate):
            found = extension
        else:
            # Another extension would have to transform the payload too.
            raise ValueError(f"prepared messages don't support the {extension.name!r} extension")
    return found


class PreparedMessage:
    """A server-to-client data message framed (and compressed) once for many connections.

    ``frames_for(extension)`` gives the wire bytes for one connection: ``extension`` is
    that connection's negotiated :class:`PerMessageDeflate` or ``None``. Bytes for
    connections without context takeover on the server side are computed once per
    compression variant and shared; for a connection with context takeover, the
    message goes through that connection's own compressor (its state advances, so send
    the bytes on that connection before anything else). Server side only: client
    frames must be masked with a fresh key each, so they cannot be shared.
    """

    __slots__ = ("payload", "opcode", "compress", "_plain_frame", "_compressed_frames")

    def __init__(self, payload: Union[bytes, str], opcode: int | None = None, *, compress: bool | None = None) -> None:
        if isinstance(payload, str):
            data = payload.encode("utf-8")
            opcode = _OPCODE_TEXT if opcode is None else opcode
        else:
            data = bytes(payload)
            opcode = _OPCODE_BINARY if opcode is None else opcode
        if opcode not in (_OPCODE_TEXT, _OPCODE_BINARY):
            raise ValueError(f"prepared messages are text (1) or binary (2), got opcode {opcode}")
        self.payload = data
        self.opcode = opcode
        self.compress = compress
        self._plain_frame: bytes | None = None
        self._compressed_frames: dict[tuple[int, int, int], bytes] = {}

    def plain_frame(self) -> bytes:
        """The uncompressed frame (cached)."""
        if self._plain_frame is None:
            self._plain_frame = _speedups.encode_frame(self.opcode, self.payload)
        return self._plain_frame

    def frames_for(self, target: Union[PerMessageDeflate, "WebSocketConnection", None]) -> bytes:
        """The complete wire bytes (one unmasked frame) to send on one connection.

        ``target`` is the connection's negotiated :class:`PerMessageDeflate` (``None``
        when it has none) or the server-side ``WebSocketConnection`` itself; pass the
        result to ``connection.send_raw_frames``.
        """
        extension: PerMessageDeflate | None
        if target is None or isinstance(target, PerMessageDeflate):
            extension = target
        elif hasattr(target, "extensions") and hasattr(target, "role"):
            extension = _deflate_extension_of(target)
        else:
            raise TypeError(f"frames_for takes a PerMessageDeflate, a WebSocketConnection or None, not {target!r}")
        if extension is None or not extension.should_compress(len(self.payload), self.opcode, self.compress):
            return self.plain_frame()
        if not extension.is_server:
            raise ValueError("prepared messages are server-to-client only (client frames are masked)")
        if not extension.local_no_context_takeover:
            # This connection's compressor carries a window from earlier messages: the
            # compressed bytes are specific to it.
            compressed, rsv = extension.encode_message(self.payload, self.opcode, True)
            return _speedups.encode_frame(self.opcode, compressed, True, rsv)
        variant = extension.compression_variant
        frame = self._compressed_frames.get(variant)
        if frame is None:
            frame = _speedups.encode_frame(self.opcode, _compress_once(self.payload, variant), True, RSV1)
            self._compressed_frames[variant] = frame
        return frame


class ServerPerMessageDeflateFactory:
    """Server-side permessage-deflate negotiation (implements ``ServerExtensionFactory``).

    ``server_max_window_bits``: the largest window our compressor uses (8..15; a
    client asking for less gets what it asks). ``client_max_window_bits``: the window
    we ask the client to stay within when its offer allows us to (``None``: don't ask).
    ``server_no_context_takeover`` / ``client_no_context_takeover``: request these even
    when the client did not offer them (they are always honoured when offered).
    ``require_client_max_window_bits``: decline offers that don't let us bound the
    client's window (so every connection's inflate state stays at the configured size).
    ``reject_malformed_offers``: fail the handshake with 400 (:class:`HandshakeError`)
    on an offer with unknown, repeated or invalid parameters. Off by default, because
    RFC 7692 section 7.1 requires the server to decline such an offer (and go on with
    the next one, or without the extension).
    """

    name = EXTENSION_NAME

    def __init__(
        self,
        *,
        server_max_window_bits: int = DEFAULT_WINDOW_BITS,
        client_max_window_bits: int | None = DEFAULT_WINDOW_BITS,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        require_client_max_window_bits: bool = False,
        mem_level: int = DEFAULT_MEM_LEVEL,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
        reject_malformed_offers: bool = False,
    ) -> None:
        _check_window_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is not None:
            _check_window_bits("client_max_window_bits", client_max_window_bits)
        elif require_client_max_window_bits:
            raise ValueError("require_client_max_window_bits needs client_max_window_bits")
        _check_compressor_settings(mem_level, compression_level, threshold)
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.require_client_max_window_bits = require_client_max_window_bits
        self.mem_level = mem_level
        self.compression_level = compression_level
        self.threshold = threshold
        self.reject_malformed_offers = reject_malformed_offers

    def negotiate(self, offers: list[ExtensionParams]) -> tuple[str, PerMessageDeflate] | None:
        """Answer the first acceptable offer; ``None`` declines the extension."""
        for params in offers:
            try:
                offer = _parse_params(params, is_offer=True)
            except ValueError as exc:
                if self.reject_malformed_offers:
                    raise HandshakeError(f"malformed {EXTENSION_NAME} offer: {exc}", 400) from None
                continue  # RFC 7692 section 7.1: decline this offer, try the next one
            accepted = self._accept_offer(offer)
            if accepted is not None:
                return accepted
        return None

    def _accept_offer(self, offer: _Params) -> tuple[str, PerMessageDeflate] | None:
        if self.require_client_max_window_bits and offer.client_max_window_bits is None:
            return None  # unsupported: we can't bound the client's window
        response: ExtensionParams = []
        server_no_context_takeover = offer.server_no_context_takeover or self.server_no_context_takeover
        if server_no_context_takeover:
            response.append((_PARAM_SERVER_NO_CONTEXT_TAKEOVER, None))
        # An offered client_no_context_takeover is a hint the client won't keep its
        # window; echoing it makes it binding, so we can free our inflate state.
        client_no_context_takeover = offer.client_no_context_takeover or self.client_no_context_takeover
        if client_no_context_takeover:
            response.append((_PARAM_CLIENT_NO_CONTEXT_TAKEOVER, None))
        # Our compressor's window: at most what the client allows, at most our config.
        server_window = self.server_max_window_bits
        if offer.server_max_window_bits is not None:
            server_window = min(server_window, offer.server_max_window_bits)
        if server_window < 15 or offer.server_max_window_bits is not None:
            response.append((_PARAM_SERVER_MAX_WINDOW_BITS, str(server_window)))
        # The client's window: only a parameter if the client offered it (7.1.2.2).
        client_window = 15
        if offer.client_max_window_bits is True:
            if self.client_max_window_bits is not None and self.client_max_window_bits < 15:
                client_window = self.client_max_window_bits
                response.append((_PARAM_CLIENT_MAX_WINDOW_BITS, str(client_window)))
        elif offer.client_max_window_bits is not None:
            client_window = offer.client_max_window_bits
            if self.client_max_window_bits is not None:
                client_window = min(client_window, self.client_max_window_bits)
            response.append((_PARAM_CLIENT_MAX_WINDOW_BITS, str(client_window)))
        extension = PerMessageDeflate(
            is_server=True,
            local_no_context_takeover=server_no_context_takeover,
            remote_no_context_takeover=client_no_context_takeover,
            local_max_window_bits=server_window,
            remote_max_window_bits=client_window,
            mem_level=self.mem_level,
            compression_level=self.compression_level,
            threshold=self.threshold,
        )
        return serialize_extension(EXTENSION_NAME, response), extension


class ClientPerMessageDeflateFactory:
    """Client-side permessage-deflate offer/acceptance (implements ``ClientExtensionFactory``).

    ``client_max_window_bits``: ``True`` offers the parameter without a value (the
    server may pick), an int offers that bound (and our compressor stays within it),
    ``None`` leaves it out. ``server_max_window_bits``: ask the server to stay within
    this window (``None``: don't ask). The no-context-takeover flags request them.
    """

    name = EXTENSION_NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | bool | None = True,
        mem_level: int = DEFAULT_MEM_LEVEL,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        if server_max_window_bits is not None:
            _check_window_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is False:
            client_max_window_bits = None
        if client_max_window_bits not in (None, True):
            assert isinstance(client_max_window_bits, int)
            _check_window_bits("client_max_window_bits", client_max_window_bits)
        _check_compressor_settings(mem_level, compression_level, threshold)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits: int | Literal[True] | None = client_max_window_bits
        self.mem_level = mem_level
        self.compression_level = compression_level
        self.threshold = threshold

    def offer_params(self) -> ExtensionParams:
        """The offer's parameters, in the order :meth:`offer` writes them."""
        params: ExtensionParams = []
        if self.server_no_context_takeover:
            params.append((_PARAM_SERVER_NO_CONTEXT_TAKEOVER, None))
        if self.client_no_context_takeover:
            params.append((_PARAM_CLIENT_NO_CONTEXT_TAKEOVER, None))
        if self.server_max_window_bits is not None:
            params.append((_PARAM_SERVER_MAX_WINDOW_BITS, str(self.server_max_window_bits)))
        if self.client_max_window_bits is True:
            params.append((_PARAM_CLIENT_MAX_WINDOW_BITS, None))
        elif self.client_max_window_bits is not None:
            params.append((_PARAM_CLIENT_MAX_WINDOW_BITS, str(self.client_max_window_bits)))
        return params

    def offer(self) -> str:
        """The ``Sec-WebSocket-Extensions`` element to send, e.g.
        ``"permessage-deflate; client_max_window_bits"``."""
        return serialize_extension(EXTENSION_NAME, self.offer_params())

    def accept(self, params: ExtensionParams) -> PerMessageDeflate:
        """Check the server's response against our offer; HandshakeError if it strays."""
        try:
            response = _parse_params(params, is_offer=False)
        except ValueError as exc:
            raise HandshakeError(f"malformed {EXTENSION_NAME} response: {exc}") from None
        if self.server_no_context_takeover and not response.server_no_context_takeover:
            raise HandshakeError("server did not accept server_no_context_takeover")
        server_window = 15
        if response.server_max_window_bits is not None:
            if self.server_max_window_bits is not None and response.server_max_window_bits > self.server_max_window_bits:
                raise HandshakeError("server_max_window_bits larger than offered")
            server_window = response.server_max_window_bits
        elif self.server_max_window_bits is not None:
            raise HandshakeError("server did not accept server_max_window_bits")
        client_window = 15
        if response.client_max_window_bits is not None:
            assert response.client_max_window_bits is not True  # valueless rejected above
            if self.client_max_window_bits is None:
                raise HandshakeError("client_max_window_bits in the response but not in the offer")
            if self.client_max_window_bits is not True and response.client_max_window_bits > self.client_max_window_bits:
                raise HandshakeError("client_max_window_bits larger than offered")
            client_window = response.client_max_window_bits
        elif isinstance(self.client_max_window_bits, int) and self.client_max_window_bits is not True:
            client_window = self.client_max_window_bits  # we promised to stay within it
        return PerMessageDeflate(
            is_server=False,
            local_no_context_takeover=self.client_no_context_takeover or response.client_no_context_takeover,
            remote_no_context_takeover=response.server_no_context_takeover,
            local_max_window_bits=client_window,
            remote_max_window_bits=server_window,
            mem_level=self.mem_level,
            compression_level=self.compression_level,
            threshold=self.threshold,
        )
