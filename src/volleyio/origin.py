"""Origin comparison, the same for every door (sans-I/O).

The WebSocket ``origins`` policy and the Engine.IO/Socket.IO origin check and CORS
allow-lists compare ``Origin`` header values through :func:`normalize_origin`: scheme
and host are lower-cased and a default port is dropped, so
``https://App.Example.com:443`` equals ``https://app.example.com``. Anything that is not
a plain ``scheme://host[:port]`` (``null``, userinfo such as ``app.example.com@evil.net``,
a path, query or fragment, a bad port, characters outside a host name) has no
normalised form and matches nothing but ``"*"``. No other leniency: ``app.example.com.``
(trailing dot), ``app.example.com.evil.net`` and other ports are other origins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Union

__all__ = ["DEFAULT_PORTS", "normalize_origin", "origin_allowed", "same_origin"]

#: The ports an origin may leave out, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_HOST = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_authority(authority: str) -> tuple[str, str | None] | None:
    """``(lower-cased host, port digits or None)``, or None if it is not a host[:port]."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[: end + 1], authority[end + 1 :]
        if not _IPV6.fullmatch(host):
            return None
    else:
        host, sep, port_text = authority.partition(":")
        rest = sep + port_text
        if not _HOST.fullmatch(host):
            return None
    if not rest:
        return host.lower(), None
    if not rest.startswith(":"):
        return None
    port = rest[1:]
    if port == "":
        return host.lower(), None  # "host:" means the default port (URL standard)
    if not _PORT.fullmatch(port) or int(port) > 65535:
        return None
    return host.lower(), port


def _parse(origin: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the port None when it is the scheme's default."""
    if not origin.isascii() or not origin.isprintable():
        return None
    scheme, sep, rest = origin.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    scheme = scheme.lower()
    if rest.endswith("/"):
        rest = rest[:-1]  # "https://app.example.com/" (a configured entry, say)
    authority = _split_authority(rest)
    if authority is None:
        return None
    host, port_text = authority
    port = None if port_text is None else int(port_text)
    if port is not None and port == DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, host, port


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased without a default port, or None when
    ``origin`` is not a plain origin (``null``, userinfo, a path, a bad port...)."""
    parsed = _parse(origin)
    if parsed is None:
        return None
    scheme, host, port = parsed
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


@lru_cache(maxsize=64)
def _allow_set(allowed: tuple[str, ...]) -> tuple[bool, frozenset[str]]:
    normalized = {normalize_origin(entry) for entry in allowed if entry != "*"}
    normalized.discard(None)
    return "*" in allowed, frozenset(n for n in normalized if n is not None)


def origin_allowed(origin: str | None, allowed: Union[str, Iterable[str]]) -> bool:
    """True if ``origin`` is on the allow-list ``allowed`` (``"*"``, or origins compared
    after :func:`normalize_origin`; a ``"*"`` entry allows any). No origin (None) is
    allowed only by ``"*"``."""
    if isinstance(allowed, str):
        allowed = (allowed,)
    wildcard, entries = _allow_set(tuple(allowed))
    if wildcard:
        return True
    if origin is None:
        return False
    normalized = normalize_origin(origin)
    return normalized is not None and normalized in entries


def same_origin(origin: str, host: str | None) -> bool:
    """True if ``origin`` names the host and port of a ``Host`` header value. A ``Host``
    without a port means the origin scheme's default port; ``null`` and anything
    :func:`normalize_origin` refuses are never same-origin."""
    if host is None:
        return False
    parsed = _parse(origin)
    authority = _split_authority(host.strip(" \t"))
    if parsed is None or authority is None:
        return False
    scheme, origin_host, origin_port = parsed
    if scheme not in DEFAULT_PORTS:
        return False
    host_name, port_text = authority
    default = DEFAULT_PORTS[scheme]
    host_port = None if port_text is None or int(port_text) == default else int(port_text)
    return origin_host == host_name and origin_port == host_port
