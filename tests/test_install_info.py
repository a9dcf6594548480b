"""What an installation says about itself: ``python -m volleyio info``, the warning when
the compiled speedups should be there but are not, and the shipped .so being stripped."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import volleyio
from volleyio import _speedups

PACKAGE = Path(volleyio.__file__).resolve().parent


def _run(args: list[str], env_extra: dict[str, str] | None = None, pythonpath: Path | None = None,
         drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VOLLEYIO_NO_EXTENSIONS", *drop)}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.pure_only  # each case picks its implementation in a subprocess
def test_info_names_kernels_python_platform_and_dependencies() -> None:
    proc = _run(["-m", "volleyio", "info"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"volleyio {volleyio.__version__}\n")
    # The subprocess runs without VOLLEYIO_NO_EXTENSIONS: it loads the compiled module
    # whenever that is importable, whatever this process selected.
    compiled_there = importlib.util.find_spec("volleyio._speedups._compiled") is not None
    expected_impl = "compiled" if compiled_there else "python"
    assert f"speedups: {expected_impl} (mask: " in out and ", UTF-8: " in out
    assert "Python: CPython " in out or "Python: PyPy " in out
    assert "platform: " in out
    import h11
    import trio

    assert f"trio {trio.__version__}, h11 {h11.__version__}" in out
    pure = _run(["-m", "volleyio", "info"], {"VOLLEYIO_NO_EXTENSIONS": "1"})
    assert "speedups: python (mask: python, UTF-8: python)" in pure.stdout
    assert "VOLLEYIO_NO_EXTENSIONS" in pure.stdout


def test_compiled_kernels_are_named(speedups_impl: str) -> None:
    kernels = _speedups.kernels()
    if speedups_impl == "python":
        assert kernels == {"mask": "python", "utf8": "python"}
    else:
        assert kernels["mask"] in {"avx2", "sse2", "neon", "scalar"}
        assert kernels["utf8"] in {"avx2", "ssse3", "scalar"}


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """This volleyio without any compiled module, importable from ``tmp_path``."""
    shutil.copytree(
        PACKAGE, tmp_path / "volleyio",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "_build_status", "__pycache__"),
    )
    return tmp_path


_IMPORT_TWICE = (
    "import warnings, importlib\n"
    "warnings.simplefilter('always')\n"
    "with warnings.catch_warnings(record=True) as seen:\n"
    "    warnings.simplefilter('always')\n"
    "    import volleyio.websocket\n"
    "    import volleyio._speedups as s\n"
    "    import volleyio.trio\n"
    "from volleyio import SpeedupsUnavailableWarning\n"
    "hits = [w for w in seen if issubclass(w.category, SpeedupsUnavailableWarning)]\n"
    "print(s.IMPLEMENTATION, len(hits))\n"
    "for w in hits: print(w.message)\n"
)


@pytest.mark.pure_only
@pytest.mark.parametrize(
    ("status", "env", "expect_warning"),
    [
        ("failed: CompileError: command 'cc' failed", {}, True),  # source install, no compiler
        ("built", {}, True),  # built, then lost (or built for another Python)
        (None, {}, False),  # no build attempted (PyPy, a source checkout)
        ("failed: CompileError: command 'cc' failed", {"VOLLEYIO_NO_EXTENSIONS": "1"}, False),  # asked for
    ],
)
def test_warning_when_the_compiled_module_should_be_there(
    package_copy: Path, status: str | None, env: dict[str, str], expect_warning: bool
) -> None:
    if status is not None:
        (package_copy / "volleyio" / "_speedups" / "_build_status").write_text(status + "\n", encoding="utf-8")
    proc = _run(["-c", _IMPORT_TWICE], env, pythonpath=package_copy)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if expect_warning:
        assert lines[0] == "python 1", proc.stdout  # once, however many modules import it
        assert ("CompileError" in lines[1]) if status != "built" else ("not importable" in lines[1])
        assert "VOLLEYIO_NO_EXTENSIONS=1" in lines[1]
    else:
        assert lines == ["python 0"], proc.stdout


@pytest.mark.pure_only
def test_setup_py_records_a_successful_build() -> None:
    if os.environ.get("VOLLEYIO_EXPECT_COMPILED") != "1":
        pytest.skip("only where the compiled module was built (VOLLEYIO_EXPECT_COMPILED=1)")
    assert _speedups.build_status() == "built"


@pytest.mark.pure_only
def test_shipped_extension_is_stripped() -> None:
    if os.environ.get("VOLLEYIO_EXPECT_COMPILED") != "1":
        pytest.skip("only where the compiled module was built (VOLLEYIO_EXPECT_COMPILED=1)")
    if not sys.platform.startswith("linux") or os.environ.get("VOLLEYIO_DEBUG_BUILD") == "1":
        pytest.skip("setup.py strips with the GNU/LLVM linker's -s on Linux")
    spec = importlib.util.find_spec("volleyio._speedups._compiled")  # this Python's (a source
    assert spec is not None and spec.origin is not None  # tree may hold one per Python)
    so = Path(spec.origin)
    data = so.read_bytes()
    assert data[:4] == b"\x7fELF"
    # Section names live in .shstrtab: a stripped object has neither debug info nor a
    # symbol table (the dynamic symbols, PyInit__compiled, stay in .dynsym).
    assert b".debug_info" not in data and b".symtab" not in data, f"{so.name} is not stripped"
    assert b".dynsym" in data
