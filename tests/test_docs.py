"""The documentation: every public name has an entry, and no reference is dead.

Builds the Sphinx docs (``-n -W``: nitpicky, warnings are errors) into a scratch
directory and reads the inventory it writes (``objects.inv``): each name of the
``__all__`` of every public module must be there under its public name. Skipped where
the docs cannot be built (a wheel's test run has no docs/ and no Sphinx).
"""

from __future__ import annotations

import importlib
import pkgutil
import posixpath
import subprocess
import sys
from pathlib import Path

import pytest

import volleyio

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: The modules the docs must cover whatever the discovery in docs/_ext finds.
REQUIRED = ["volleyio", "volleyio.trio", "volleyio.websocket", "volleyio.engineio", "volleyio.socketio"]


def _public_modules() -> list[str]:
    found = list(REQUIRED)
    for info in pkgutil.iter_modules(volleyio.__path__):
        name = f"volleyio.{info.name}"
        if not info.name.startswith("_") and name not in found:
            if hasattr(importlib.import_module(name), "__all__"):
                found.append(name)
    return found


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    if not (DOCS / "conf.py").exists():
        pytest.skip("no docs/ next to the tests (testing an installed wheel)")
    pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path_factory.mktemp("docs")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"the docs build failed (-n -W):\n{proc.stderr[-5000:]}"
    with open(out / "html" / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", posixpath.join)
    data = inv.data if hasattr(inv, "data") else inv
    return {name for entries in data.values() for name in entries}


@pytest.mark.pure_only  # one build is enough; it does not depend on the speedups
def test_every_public_name_has_an_entry(inventory: set[str]) -> None:
    missing = [
        f"{module}.{name}"
        for module in _public_modules()
        for name in importlib.import_module(module).__all__
        if not name.startswith("__") and f"{module}.{name}" not in inventory
    ]
    assert not missing, f"public names without an entry in the docs: {missing}"


@pytest.mark.pure_only
def test_reference_pages_exist_for_every_public_module(inventory: set[str]) -> None:
    for module in _public_modules():
        assert module in inventory, f"no reference page declares module {module}"
