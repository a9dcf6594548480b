"""Build the optional compiled speedups.

The extension is optional: if it cannot be built (no compiler, PyPy, or
VOLLEYIO_NO_EXTENSIONS=1 at build time) the package installs with the pure-Python
twins and says so. Wheel builds set VOLLEYIO_REQUIRE_EXTENSIONS=1 so a failed
build is an error there, never a silently slow wheel.
"""

from __future__ import annotations

import os
import platform
import re
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("VOLLEYIO_REQUIRE_EXTENSIONS") == "1"
SKIP = os.environ.get("VOLLEYIO_NO_EXTENSIONS") == "1" or platform.python_implementation() != "CPython"


def _extensions() -> list[Extension]:
    if SKIP and not REQUIRE:
        return []
    extra_compile_args: list[str] = []
    extra_link_args: list[str] = []
    if sys.platform != "win32":
        extra_compile_args = ["-O3", "-fno-strict-aliasing"]
        if sys.platform != "darwin":
            # Strip the symbol table and debug info from the shipped .so (GNU ld/lld -s);
            # VOLLEYIO_DEBUG_BUILD=1 keeps them for debugging. macOS: ld64 has no -s for
            # bundles; its builds carry no DWARF in the .so anyway (it stays in the .o files).
            if os.environ.get("VOLLEYIO_DEBUG_BUILD") != "1":
                extra_link_args = ["-s"]
    else:
        extra_compile_args = ["/O2"]
    sources = ["ext/_compiled.pyx", "ext/vio_simd.c"]
    if not all(os.path.exists(s) for s in sources):
        return []
    return [
        Extension(
            "volleyio._speedups._compiled",
            sources=sources,
            include_dirs=["ext"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


#: Written next to the extension: "built" or "failed: <reason>". volleyio._speedups reads
#: it at import to tell "the compiled module should be here but is not" (warn) from "no
#: build was attempted" (PyPy, VOLLEYIO_NO_EXTENSIONS=1 at build time): no file, no warning.
BUILD_STATUS = "_build_status"


def _short_reason(exc: BaseException) -> str:
    """One short line: a failed compiler command is named by its program, not its 30 flags."""
    text = str(exc)
    command = re.search(r"Command '\['([^']+)'.*?exit status (\d+)", text)
    if command:
        return f"{exc.__class__.__name__}: {command.group(1)} failed (exit status {command.group(2)})"
    first = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {first}"[:200]


class OptionalBuildExt(build_ext):
    """Fall back to the pure-Python twins when compiling fails, unless required."""

    _failure: str | None = None

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
            self._fallback(exc)
        self._write_status()

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _write_status(self) -> None:
        for ext in self.extensions:
            folder = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(folder, exist_ok=True)
            status = "built" if self._failure is None else f"failed: {self._failure}"
            with open(os.path.join(folder, BUILD_STATUS), "w", encoding="utf-8") as f:
                f.write(status + "\n")

    def _fallback(self, exc: BaseException) -> None:
        if REQUIRE:
            raise exc
        self._failure = _short_reason(exc)
        sys.stderr.write(
            "\n*** volleyio: the compiled speedups could not be built "
            f"({exc.__class__.__name__}: {exc}).\n"
            "*** Installing the pure-Python implementation: same behaviour, lower speed.\n\n"
        )


def _cythonize(exts: list[Extension]) -> list[Extension]:
    if not exts:
        return exts
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        sys.stderr.write("*** volleyio: Cython not available; installing pure-Python twins only.\n")
        return []
    try:
        return cythonize(
            exts,
            compiler_directives={
                "language_level": 3,
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "initializedcheck": False,
            },
        )
    except Exception as exc:  # noqa: BLE001 - a failed translation means "fall back"
        if REQUIRE:
            raise
        sys.stderr.write(
            f"*** volleyio: Cython could not translate the extension ({exc.__class__.__name__}: {exc});"
            " installing the pure-Python twins only.\n"
        )
        return []


setup(ext_modules=_cythonize(_extensions()), cmdclass={"build_ext": OptionalBuildExt})
