# The sanitizer build used by scripts/fuzz and the last stage of scripts/test (sourced).
#
# A separate venv ($VOLLEYIO_FUZZ_DIR, default .fuzz/venv; the normal .venv is not
# touched) with the test/interop/fuzz extras and volleyio installed from a copy of the
# tree, its extension compiled by clang with AddressSanitizer + UndefinedBehaviorSanitizer
# (UB is fatal: -fno-sanitize-recover, and halt_on_error for the one recoverable check,
# pointer-overflow, which fuzz/ubsan.supp silences in Cython's generated C only) and libFuzzer's coverage hooks (fuzzer-no-link),
# so atheris sees native coverage too.
#
# Python itself is not built with ASan, so the sanitizer runtime must be loaded first:
# SAN_PRELOAD is atheris' asan_with_fuzzer.so (ASan + UBSan handlers + libFuzzer, the way
# atheris documents for native extensions); SAN_ENV holds the ASAN/UBSAN options
# (detect_leaks=0: CPython's allocator is not leak-clean by design).
# The build is redone only when src/, ext/, setup.py, pyproject.toml or the flags change.

FUZZ_DIR="${VOLLEYIO_FUZZ_DIR:-.fuzz}"
SAN_VENV="$FUZZ_DIR/venv"
SAN_PY="$SAN_VENV/bin/python"
SAN_CC="${VOLLEYIO_SAN_CC:-}"
SAN_CFLAGS="-fsanitize=address,undefined -fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp -fno-sanitize-recover=undefined -fsanitize-recover=pointer-overflow -fno-omit-frame-pointer -g -O1"
SAN_LDFLAGS="-fsanitize=address,undefined"
SAN_ENV=(
  "ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:handle_abort=1:symbolize=1:detect_stack_use_after_return=0:quarantine_size_mb=64:malloc_context_size=12"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$PWD/fuzz/ubsan.supp"
)

_san_find_cc() {
  if [ -n "$SAN_CC" ]; then return; fi
  local cc
  for cc in clang-14 clang; do
    if command -v "$cc" >/dev/null 2>&1; then SAN_CC="$cc"; return; fi
  done
  echo "scripts/_sanitizer.sh: clang is needed for the sanitizer build (Debian: clang, libclang-rt-14-dev)" >&2
  return 1
}

# Print the extras' requirements and the core dependencies from pyproject.toml.
_san_requirements() {
  "$SAN_PY" - "$@" <<'EOF'
import sys, tomllib
with open("pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1:]:
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
EOF
}

setup_sanitizer_env() {
  _san_find_cc
  mkdir -p "$FUZZ_DIR"
  # One build at a time (two scripts/fuzz started together share the venv).
  (
    flock 9
    _setup_sanitizer_env_locked
  ) 9>"$FUZZ_DIR/build.lock" || return 1
  SAN_PRELOAD="$("$SAN_PY" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')"
}

_setup_sanitizer_env_locked() {
  if [ ! -x "$SAN_PY" ]; then
    python3 -m venv "$SAN_VENV"
  fi
  local stamp="$FUZZ_DIR/build.stamp"
  local want
  want="$( (echo "$SAN_CC $SAN_CFLAGS $SAN_LDFLAGS"; "$SAN_CC" --version | head -1;
            find src ext setup.py pyproject.toml MANIFEST.in -type f ! -name '*.so' ! -name '*.pyc' \
              ! -path '*/__pycache__/*' ! -name '_compiled.c' ! -name '*.html' -print0 | sort -z | xargs -0 sha256sum) \
          | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    SAN_PRELOAD="$("$SAN_PY" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))' 2>/dev/null || true)"
    if [ -n "$SAN_PRELOAD" ] && env "${SAN_ENV[@]}" LD_PRELOAD="$SAN_PRELOAD" "$SAN_PY" -c 'import volleyio._speedups._compiled' 2>/dev/null; then
      return 0
    fi
  fi
  echo "== sanitizer build ($SAN_CC, ASan+UBSan) in $FUZZ_DIR"
  "$SAN_PY" -m pip install -q --upgrade pip setuptools wheel "Cython>=3.1"
  local reqs=()
  mapfile -t reqs < <(_san_requirements test interop fuzz)
  "$SAN_PY" -m pip install -q "${reqs[@]}" || return 1
  # Build from a copy, so neither the normal build/ dir nor the ext/_compiled.c of the
  # working tree is touched.
  local copy="$FUZZ_DIR/src-copy"
  rm -rf "$copy"
  mkdir -p "$copy"
  cp -r src ext setup.py pyproject.toml MANIFEST.in README.md LICENSE "$copy"/
  find "$copy" \( -name '*.so' -o -name '__pycache__' -o -name '_compiled.c' \) -prune -exec rm -rf {} +
  CC="$SAN_CC" CFLAGS="$SAN_CFLAGS" LDFLAGS="$SAN_LDFLAGS" VOLLEYIO_REQUIRE_EXTENSIONS=1 \
    "$SAN_PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$copy" >/dev/null || return 1
  SAN_PRELOAD="$("$SAN_PY" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')"
  # The module must load (under the runtime) and must be the instrumented one.
  env "${SAN_ENV[@]}" LD_PRELOAD="$SAN_PRELOAD" "$SAN_PY" -c '
import volleyio._speedups._compiled as c, sys
path = c.__file__
data = open(path, "rb").read()
sys.exit(0 if b"__asan_init" in data and b"__ubsan_handle" in data else "the sanitizer build lacks ASan/UBSan: " + path)
' || return 1
  echo "$want" > "$stamp"
}
