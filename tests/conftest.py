"""Every test runs once per available speedups implementation.

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


@pytest.fixture
def sp(speedups_impl: str):  # type: ignore[no-untyped-def]
    """The selected implementation module itself."""
    return _speedups.available()[speedups_impl]
