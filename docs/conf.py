"""Sphinx configuration for volleyio's documentation.

Builds offline: no intersphinx inventories are fetched and nothing is downloaded.
Autodoc imports volleyio from ../src, so the docs build without installing the package
(and without the compiled extension: the pure-Python twins carry the docstrings).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import volleyio  # noqa: E402

project = "volleyio"
author = "the volleyio developers"
copyright = "the volleyio developers"  # noqa: A001 - Sphinx's name for it
release = volleyio.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "benchmarks_list",
    "api_reference",
]

# reference/*.rst is written at build time from the public modules' __all__
# (docs/_ext/api_reference.py); deeper public modules to include go here.
api_reference_extra: list[str] = []

root_doc = "index"
exclude_patterns = ["_build", "_ext"]
templates_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Offline build: no intersphinx, no remote images, no link checking by default.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# furo when installed (pip install -e ".[docs]"), Sphinx's builtin alabaster otherwise.
html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = f"volleyio {release}"
html_static_path: list[str] = []

# Type aliases that signatures name but that have no entry of their own (they are shown as
# text): the ASGI callable, a WebSocket route and the Admin UI's auth option.
nitpick_ignore = [("py:class", "_ASGICallable"), ("py:class", "Route"), ("py:class", "AdminAuth")]
# "more than one target found": a bare class name in a signature that is re-exported from
# several modules (SocketIOServer from volleyio.trio and volleyio.socketio) resolves to one
# of them; that is not a dead reference (those still fail the build).
suppress_warnings = ["ref.python"]
