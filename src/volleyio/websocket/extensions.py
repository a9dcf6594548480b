"""The WebSocket extension interface (RFC 6455 section 9) and the extension header grammar.

An *extension* transforms the payload of data messages and may claim RSV bits on the
first frame of a message (permessage-deflate, RFC 7692, claims RSV1 = ``0x4``). This
module defines the three small protocols an extension implements and the parser /
serializer for ``Sec-WebSocket-Extensions`` header values. It knows nothing about any
particular extension; ``volleyio.websocket.deflate`` implements permessage-deflate
against it.

How :class:`~volleyio.websocket.connection.WebSocketConnection` uses an extension
(this is the whole contract; the connection calls nothing else):

* Receiving: when the first frame of a data message (text or binary) has any of
  ``extension.rsv_mask`` bits set, the connection calls
  ``extension.decode_fragment(payload, first, rsv, fin, max_length)`` for *every*
  data frame of that message, in order, and uses the returned bytes in place of the
  wire payload. ``rsv`` is the first frame's RSV bits (the same value for every call
  of one message). When the first frame has none of the extension's bits, the
  extension is not called for that message at all. With several negotiated
  extensions, decoding runs in reverse negotiation order (RFC 6455 section 9.1: the
  first listed extension is applied first when sending, so it is undone last).
  Control frames are never passed to extensions.
* Sending: ``send_text`` / ``send_binary`` call
  ``extension.encode_message(payload, opcode, compress)`` once per message, in
  negotiation order, and put the returned RSV bits (OR-ed over all extensions) on the
  first frame. The connection then splits the encoded payload into frames itself.
* Handshake: the server calls ``ServerExtensionFactory.negotiate`` with every offer
  of the factory's name; the client calls ``ClientExtensionFactory.offer`` to build
  its request and ``accept`` with the parameters the server answered.

Implementations raise :class:`~volleyio.errors.ProtocolError` (with the close code)
from the data-path methods and :class:`~volleyio.errors.HandshakeError` from the
negotiation methods. Any other exception escaping an extension is treated by the
connection as an internal error and closes with 1011.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional, Protocol, runtime_checkable

from ..errors import HandshakeError

__all__ = [
    "ExtensionParams",
    "ExtensionOffer",
    "Extension",
    "ServerExtensionFactory",
    "ClientExtensionFactory",
    "parse_extensions_header",
    "serialize_extension",
    "is_token",
]

#: The parameters of one extension offer/response, in header order: ``(name, value)``
#: where ``value`` is ``None`` for a bare parameter (``client_no_context_takeover``)
#: and the unquoted string otherwise (``server_max_window_bits="10"`` gives ``"10"``).
ExtensionParams = list[tuple[str, Optional[str]]]
#: One element of an extension list: ``(extension name, parameters)``.
ExtensionOffer = tuple[str, ExtensionParams]


@runtime_checkable
class Extension(Protocol):
    """A negotiated extension, bound to one connection (it may keep per-connection state,
    e.g. a compression context)."""

    #: The registered extension token, e.g. ``"permessage-deflate"``.
    name: str
    #: The RSV bits (``0x4`` = RSV1, ``0x2`` = RSV2, ``0x1`` = RSV3) this extension may set
    #: on the first frame of a data message. The connection rejects (1002) any RSV bit
    #: that no negotiated extension claims.
    rsv_mask: int

    def decode_fragment(self, payload: bytes, first: bool, rsv: int, fin: bool, max_length: int) -> bytes:
        """Decode one data frame's payload of a message this extension transformed.

        Called for every data frame of a message whose first frame carried any of
        :attr:`rsv_mask` bits, in order: ``first`` is True for the opening frame,
        ``fin`` is True for the final one (a single-frame message has both). ``rsv``
        is the first frame's RSV bits, the same for every call of one message.

        ``max_length`` is the remaining message budget in bytes: if decoding this
        fragment would produce more than ``max_length`` bytes, raise
        ``ProtocolError(..., code=1009)`` (stop inflating as soon as the budget is
        exceeded; never materialize an unbounded result). Raise ``ProtocolError`` with
        1002 (or 1007 for invalid text semantics, 1011 for internal failures) on
        corrupt input. Return the decoded bytes of this fragment (may be empty).
        """
        ...

    def encode_message(self, payload: bytes, opcode: int, compress: bool | None) -> tuple[bytes, int]:
        """Encode one whole outgoing data message (``opcode`` 1 = text, 2 = binary).

        ``compress`` is the caller's per-send choice: ``None`` applies the
        extension's own policy (e.g. a size threshold), ``True`` forces the
        transformation, ``False`` sends the payload unchanged. Return
        ``(wire payload, rsv bits for the first frame)``; the RSV bits must be a
        subset of :attr:`rsv_mask` and ``0`` when the payload was left unchanged.
        """
        ...


@runtime_checkable
class ServerExtensionFactory(Protocol):
    """Server-side negotiation of one extension (configured once, used per handshake)."""

    #: The extension token this factory answers to.
    name: str

    def negotiate(self, offers: list[ExtensionParams]) -> tuple[str, Extension] | None:
        """Pick one of the client's offers for this extension.

        ``offers`` holds the parameters of every offer of :attr:`name`, in the
        client's order of preference. Return ``(response header element,
        extension)`` -- the element is the full ``name; param=value`` text, see
        :func:`serialize_extension` -- or ``None`` to decline the extension (the
        handshake then goes on without it). Raise ``HandshakeError`` (status 400)
        only when an offer is malformed in a way the extension's RFC says must fail
        the handshake; RFC 7692 (permessage-deflate) says to decline instead.
        """
        ...


@runtime_checkable
class ClientExtensionFactory(Protocol):
    """Client-side offer and acceptance of one extension."""

    #: The extension token this factory offers.
    name: str

    def offer(self) -> str:
        """The ``Sec-WebSocket-Extensions`` element to send, e.g. ``"permessage-deflate;
        client_max_window_bits"`` (see :func:`serialize_extension`)."""
        ...

    def accept(self, params: ExtensionParams) -> Extension:
        """Build the connection's extension from the server's response parameters.

        Raise ``HandshakeError`` when the response is not acceptable (unknown or
        duplicated parameter, a value outside what was offered, ...); the client
        then fails the handshake.
        """
        ...


# RFC 7230 section 3.2.6: token characters.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"


def is_token(value: str) -> bool:
    """True if ``value`` is a non-empty RFC 7230 token."""
    return bool(value) and all(char in _TCHARS for char in value)


class _HeaderScanner:
    """A cursor over one header value; every error names the offending position."""

    __slots__ = ("text", "pos")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> HandshakeError:
        return HandshakeError(f"malformed Sec-WebSocket-Extensions header: {what} at {self.pos} in {self.text!r}")

    def skip_ows(self) -> None:
        text = self.text
        while self.pos < len(text) and text[self.pos] in _OWS:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def token(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] in _TCHARS:
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected a token")
        return text[start : self.pos]

    def quoted_string(self) -> str:
        # RFC 7230 section 3.2.6 quoted-string with quoted-pair escapes.
        text = self.text
        self.pos += 1  # opening DQUOTE
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                if self.pos + 1 >= len(text):
                    break
                chars.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char in "\r\n" or (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
                raise self.fail("control character in quoted-string")
            chars.append(char)
            self.pos += 1
        raise self.fail("unterminated quoted-string")


def parse_extensions_header(values: Iterable[str]) -> list[ExtensionOffer]:
    """Parse ``Sec-WebSocket-Extensions`` header values into ``[(name, params), ...]``.

    ``values`` are the field values of every ``Sec-WebSocket-Extensions`` header line
    in order (several lines are one comma-separated list). The grammar is RFC 6455
    section 9.1::

        extension-list = 1#extension
        extension      = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    with optional whitespace around separators and, as in every RFC 7230 list, empty
    list elements ignored. A quoted value is unescaped and must itself be a token
    (RFC 6455 section 9.1). Parameter names keep their case; extension names are
    compared case-sensitively by the caller as registered tokens. Anything else
    raises :class:`HandshakeError` (status 400).
    """
    result: list[ExtensionOffer] = []
    for value in values:
        scanner = _HeaderScanner(value)
        while True:
            scanner.skip_ows()
            if scanner.at_end():
                break
            if scanner.peek() == ",":  # empty list element
                scanner.pos += 1
                continue
            name = scanner.token()
            params: ExtensionParams = []
            scanner.skip_ows()
            while scanner.peek() == ";":
                scanner.pos += 1
                scanner.skip_ows()
                param_name = scanner.token()
                scanner.skip_ows()
                param_value: str | None = None
                if scanner.peek() == "=":
                    scanner.pos += 1
                    scanner.skip_ows()
                    if scanner.peek() == '"':
                        param_value = scanner.quoted_string()
                        if not is_token(param_value):
                            raise scanner.fail("quoted parameter value is not a token")
                    else:
                        param_value = scanner.token()
                    scanner.skip_ows()
                params.append((param_name, param_value))
            result.append((name, params))
            if scanner.at_end():
                break
            if scanner.peek() != ",":
                raise scanner.fail("expected ',' or ';'")
            scanner.pos += 1
    return result


def serialize_extension(name: str, params: Sequence[tuple[str, str | None]] = ()) -> str:
    """Serialize one extension element: ``name; p1; p2=value`` (the inverse of one
    element of :func:`parse_extensions_header`). Values that are tokens are written bare;
    anything else is rejected with ``ValueError`` because RFC 6455 section 9.1 only
    allows token values (quoted or not)."""
    if not is_token(name):
        raise ValueError(f"extension name is not a token: {name!r}")
    parts = [name]
    for param_name, param_value in params:
        if not is_token(param_name):
            raise ValueError(f"extension parameter name is not a token: {param_name!r}")
        if param_value is None:
            parts.append(param_name)
        elif is_token(param_value):
            parts.append(f"{param_name}={param_value}")
        else:
            raise ValueError(f"extension parameter value is not a token: {param_value!r}")
    return "; ".join(parts)
