"""Every test runs once per available speedups implementation (and WebSocket server
tests that apply to both handler styles once per style: the ``handler_style`` fixture).

When ``VOLLEYIO_EXPECT_COMPILED=1`` (set by the test command unless
``VOLLEYIO_NO_EXTENSIONS=1``), a missing compiled module is a failure, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from volleyio import _speedups

IMPLEMENTATIONS = ("compiled", "python")


@pytest.fixture(params=IMPLEMENTATIONS, autouse=True)
def speedups_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Select one implementation for the duration of the test; yield its name."""
    name: str = request.param
    if name not in _speedups.available():
        if name == "compiled" and os.environ.get("VOLLEYIO_EXPECT_COMPILED") == "1":
            pytest.fail("the compiled speedups were expected but did not load")
        pytest.skip(f"{name} speedups not available")
    if "pure_only" in request.keywords and name != "python":
        pytest.skip("test exercises the pure-Python twin only")
    previous = _speedups.select(name)
    try:
        yield name
    finally:
        _speedups.select(previous)


@pytest.fixture(params=("async", "callbacks"))
def handler_style(request: pytest.FixtureRequest) -> str:
    """The handler style of a WebSocket server test: ``"async"`` (an ``async def
    handler(ws)``) or ``"callbacks"`` (a ``MessageHandler``). Tests that apply to both
    take this fixture and serve ``_trio_support.echo_for(handler_style)`` (or their own
    handler in each style), so they run once per style, like once per speedups twin."""
    style: str = request.param
    return style


@pytest.fixture
def sp(speedups_impl: str):  # type: ignore[no-untyped-def]
    """The selected implementation module itself."""
    return _speedups.available()[speedups_impl]
