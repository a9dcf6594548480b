"""volleyio.origin: the one Origin normalisation every door uses (table-driven)."""

from __future__ import annotations

import pytest

from volleyio.engineio.server import CorsConfig
from volleyio.origin import normalize_origin, origin_allowed, same_origin
from volleyio.websocket.handshake import is_same_origin

NORMALIZED = [
    ("https://app.example.com", "https://app.example.com"),
    ("https://app.example.com:443", "https://app.example.com"),
    ("HTTPS://App.Example.COM:443", "https://app.example.com"),
    ("http://app.example.com:80", "http://app.example.com"),
    ("http://app.example.com:443", "http://app.example.com:443"),
    ("https://app.example.com:80", "https://app.example.com:80"),
    ("https://app.example.com:8443", "https://app.example.com:8443"),
    ("https://app.example.com:0443", "https://app.example.com"),
    ("https://app.example.com:", "https://app.example.com"),
    ("https://app.example.com/", "https://app.example.com"),
    ("wss://app.example.com:443", "wss://app.example.com"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("http://[::1]:80", "http://[::1]"),
    ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("https://app.example.com.", "https://app.example.com."),  # a different host: kept apart
    ("null", None),
    ("", None),
    ("app.example.com", None),
    ("https://", None),
    ("https://app.example.com@evil.net", None),
    ("https://user:pw@app.example.com", None),
    ("https://app.example.com/path", None),
    ("https://app.example.com?x=1", None),
    ("https://app.example.com#x", None),
    ("https://app.example.com:99999", None),
    ("https://app.example.com:-1", None),
    ("https://app.example.com:44a", None),
    ("https://app.example.com:443:443", None),
    ("https://app example.com", None),
    ("https://app.example.com\\evil.net", None),
    ("https://app.exämple.com", None),
    ("https://app..example.com", None),
    ("https://[::1", None),
    ("1https://app.example.com", None),
    ("https://app.example.com\r\n", None),
]


@pytest.mark.parametrize(("origin", "expected"), NORMALIZED)
def test_normalize_origin(origin: str, expected: str | None) -> None:
    assert normalize_origin(origin) == expected


ALLOW = ("https://app.example.com", "http://localhost:3000")

ALLOWED = [
    ("https://app.example.com", True),
    ("https://app.example.com:443", True),
    ("https://APP.example.com", True),
    ("HTTPS://app.example.com:443", True),
    ("http://localhost:3000", True),
    ("http://LOCALHOST:3000", True),
    ("https://app.example.com.evil.net", False),
    ("https://app.example.com@evil.net", False),
    ("https://evil.net@app.example.com", False),
    ("https://evil.net#@app.example.com", False),
    ("https://app.example.com.", False),
    ("https://app.example.com:8443", False),
    ("http://app.example.com", False),
    ("wss://app.example.com", False),
    ("http://localhost", False),
    ("http://localhost:3001", False),
    ("null", False),
    ("https://xapp.example.com", False),
    ("https://app.example.co", False),
]


@pytest.mark.parametrize(("origin", "allowed"), ALLOWED)
def test_allow_list_every_door(origin: str, allowed: bool) -> None:
    # The helper, the Engine.IO/Socket.IO CORS allow-list and (below) the WebSocket
    # policy all answer the same.
    assert origin_allowed(origin, ALLOW) is allowed
    assert origin_allowed(origin, list(ALLOW)) is allowed
    assert CorsConfig(allowed_origins=ALLOW).allows(origin) is allowed


def test_allow_list_entries_are_normalised_too() -> None:
    assert origin_allowed("https://app.example.com", ["HTTPS://App.Example.com:443/"])
    assert origin_allowed("https://app.example.com:8443", ["https://app.example.com:8443"])
    assert not origin_allowed("https://app.example.com", ["https://app.example.com:8443"])


def test_wildcard_and_missing_origin() -> None:
    assert origin_allowed("null", "*")
    assert origin_allowed(None, ["*"])
    assert origin_allowed("https://anything.example", ("x", "*"))
    assert not origin_allowed(None, ALLOW)
    assert not origin_allowed("https://app.example.com", ())


SAME = [
    ("https://app.example.com", "app.example.com", True),
    ("https://app.example.com:443", "app.example.com", True),
    ("https://app.example.com", "app.example.com:443", True),
    ("https://App.Example.com", "APP.example.com", True),
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("http://app.example.com", "app.example.com:8080", False),
    ("https://app.example.com", "app.example.com:80", False),
    ("https://app.example.com.evil.net", "app.example.com", False),
    ("https://app.example.com@evil.net", "evil.net", False),
    ("null", "app.example.com", False),
    ("chrome-extension://abc", "abc", False),
    ("https://app.example.com", "app.example.com@evil.net", False),
]


@pytest.mark.parametrize(("origin", "host", "same"), SAME)
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same
    assert is_same_origin(origin, host) is same
