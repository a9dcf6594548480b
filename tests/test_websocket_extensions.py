"""Sec-WebSocket-Extensions grammar (RFC 6455 section 9.1) and the extension protocols."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_websocket_helpers import CountingExtension
from volleyio.errors import HandshakeError
from volleyio.websocket import Extension, parse_extensions_header, serialize_extension

PARSE_CASES = [
    (["permessage-deflate"], [("permessage-deflate", [])]),
    (["permessage-deflate; client_max_window_bits"], [("permessage-deflate", [("client_max_window_bits", None)])]),
    (["permessage-deflate;server_max_window_bits=10"], [("permessage-deflate", [("server_max_window_bits", "10")])]),
    (['permessage-deflate; server_max_window_bits="10"'], [("permessage-deflate", [("server_max_window_bits", "10")])]),
    (['x; a="b\\c"'], [("x", [("a", "bc")])]),  # quoted-pair unescapes
    (["a, b"], [("a", []), ("b", [])]),
    (["a", "b; c"], [("a", []), ("b", [("c", None)])]),  # several header lines form one list
    ([" a ;\tp = 1 , , b "], [("a", [("p", "1")]), ("b", [])]),  # OWS and empty elements
    ([""], []),
    ([], []),
    (
        ["permessage-deflate; client_no_context_takeover; server_no_context_takeover, permessage-deflate"],
        [("permessage-deflate", [("client_no_context_takeover", None), ("server_no_context_takeover", None)]), ("permessage-deflate", [])],
    ),
]


@pytest.mark.parametrize("values, expected", PARSE_CASES)
def test_parse_extensions_header(values: list[str], expected: object) -> None:
    assert parse_extensions_header(values) == expected


MALFORMED = [
    "; a",  # no extension name
    "a;",  # parameter name missing
    "a; =1",
    "a; b=",  # value missing
    'a; b="1',  # unterminated quoted-string
    'a; b="1 2"',  # quoted value is not a token
    'a; b=""',  # empty quoted value is not a token
    "a b",  # junk after a token
    "a; b=1 2",
    "a; b=(1)",
    "a=1",
    "a; b=\"x\x01\"",
    "@",
]


@pytest.mark.parametrize("value", MALFORMED)
def test_parse_extensions_header_rejects_malformed(value: str) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_extensions_header([value])
    assert info.value.status == 400


def test_serialize_extension() -> None:
    assert serialize_extension("permessage-deflate") == "permessage-deflate"
    assert serialize_extension("permessage-deflate", [("client_max_window_bits", None), ("server_max_window_bits", "10")]) == (
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
    )
    for bad in [("bad name", []), ("x", [("p q", None)]), ("x", [("p", "a b")])]:
        with pytest.raises(ValueError):
            serialize_extension(bad[0], bad[1])  # type: ignore[arg-type]


TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcxyzABCXYZ", min_size=1, max_size=12)


@given(st.lists(st.tuples(TOKEN, st.lists(st.tuples(TOKEN, st.none() | TOKEN), max_size=4)), max_size=4))
def test_serialize_parse_round_trip(elements: list[tuple[str, list[tuple[str, str | None]]]]) -> None:
    header = ", ".join(serialize_extension(name, params) for name, params in elements)
    assert parse_extensions_header([header]) == elements


def test_counting_extension_satisfies_protocol() -> None:
    assert isinstance(CountingExtension(), Extension)
