"""Free-threaded CPython (3.14t): the compiled module must not bring the GIL back.

The extension declares itself free-threading compatible (``Py_MOD_GIL_NOT_USED`` via
Cython's ``freethreading_compatible`` directive). On a free-threaded build, importing a
module without that declaration re-enables the GIL for the whole process (with a
RuntimeWarning). The check runs in a fresh interpreter so that nothing else the test
session imported can have turned the GIL on first. Skipped on builds with a GIL, unless
VOLLEYIO_EXPECT_FREE_THREADING=1 (set for the cibuildwheel cp314t test job) says this
must be a free-threaded build, in which case it fails there instead.

The threaded smoke test runs everywhere: many threads using the compiled functions at
once, each checking its own results against the pure twin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import threading

import pytest

from volleyio import _speedups

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _require_free_threaded_build() -> None:
    if FREE_THREADED:
        return
    if os.environ.get("VOLLEYIO_EXPECT_FREE_THREADING") == "1":
        pytest.fail("VOLLEYIO_EXPECT_FREE_THREADING=1 but this interpreter has a GIL")
    pytest.skip("not a free-threaded build (Py_GIL_DISABLED)")


@pytest.mark.pure_only  # one check per interpreter; it imports the compiled module itself
def test_importing_the_compiled_module_keeps_the_gil_off() -> None:
    _require_free_threaded_build()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON_GIL", "VOLLEYIO_NO_EXTENSIONS")}
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"  # the re-enabling RuntimeWarning fails too
        "assert not sys._is_gil_enabled(), 'GIL on before the import'\n"
        "import volleyio._speedups._compiled\n"
        "import volleyio._speedups as s\n"
        "assert s.IMPLEMENTATION == 'compiled', s.IMPLEMENTATION\n"
        "print('gil', sys._is_gil_enabled())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "gil False", "importing volleyio's compiled module re-enabled the GIL"


def test_threads_share_the_module_each_with_its_own_validator(speedups_impl: str) -> None:
    sp = _speedups.available()[speedups_impl]
    pure = _speedups.available()["python"]
    errors: list[str] = []
    text = ("héllo ✓ " * 2000).encode()
    key = b"\x01\x02\x03\x04"
    frame = pure.encode_frame(1, text, mask_key=key)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        validator = sp.Utf8Validator()  # per-thread object: validators are not shared
        for i in range(30):
            data = bytes([(n + i) % 256]) * (1000 + i) + text
            if sp.mask(data, key, i) != pure.mask(data, key, i):
                errors.append(f"mask differs in thread {n}")
            frames, consumed, error = sp.parse_frames(frame, True, 1 << 20, 0, True)
            if error is not None or consumed != len(frame) or frames[0][3] != text.decode():
                errors.append(f"parse_frames differs in thread {n}")
            if validator.feed(text[: 3 + i]) != -1 or validator.feed(text[3 + i :]) != -1 or not validator.complete:
                errors.append(f"Utf8Validator failed in thread {n}")
            if sp.validate_utf8(text) != -1:
                errors.append(f"validate_utf8 failed in thread {n}")
            validator.reset()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
