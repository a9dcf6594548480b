# Shared set-up for scripts/test and scripts/demo (sourced, not run).
# Creates .venv, installs volleyio in editable mode (compiling the extension; a
# failed compile is an error here) and what the caller needs: the demo only volleyio
# itself, the tests the "test" and "interop" extras. Every long step says what it does
# and, while it runs, how long it has been running; its output goes to a log that is
# shown only when it fails.
VENV="${VOLLEYIO_VENV:-.venv}"
PY="$VENV/bin/python"
SETUP_LOG_DIR="${VOLLEYIO_LOG_DIR:-$VENV/logs}"

# step "what it does" command...: runs the command quietly, printing a line when it starts,
# "... N s" every 15 s while it runs, and the time taken (or the log's tail on failure).
step() {
  echo "== $1"
  quietly "$@"
}

# quietly "name" command...: step without the heading line.
quietly() {
  local what="$1"
  shift
  mkdir -p "$SETUP_LOG_DIR"
  local log
  log="$SETUP_LOG_DIR/$(printf '%s' "$what" | tr -c 'A-Za-z0-9' '_' | cut -c1-40).log"
  local start=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local waited=0
    while [ $waited -lt 15 ] && kill -0 "$pid" 2>/dev/null; do
      sleep 1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "   ... $((SECONDS - start)) s"
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "   FAILED after $((SECONDS - start)) s (exit $rc); the end of $log:" >&2
    tail -n 40 "$log" >&2
    return "$rc"
  fi
  echo "   done in $((SECONDS - start)) s"
}

# setup_python_env [EXTRAS]: EXTRAS is a comma-separated list of volleyio's extras
# ("test,interop" when omitted; "" for volleyio alone, as the demo needs).
setup_python_env() {
  local extras="${1-test,interop}"
  local target="."
  if [ -n "$extras" ]; then
    target=".[$extras]"
  fi
  if [ ! -x "$PY" ]; then
    step "creating the virtual environment $VENV ($(python3 --version 2>&1))" python3 -m venv "$VENV"
  fi
  step "installing the build tools (pip, setuptools, wheel, Cython)" \
    "$PY" -m pip install --upgrade pip setuptools wheel "Cython>=3.1"
  local what="building volleyio with its compiled speedups (Cython and C: about a minute)"
  if [ -n "$extras" ]; then
    what="$what, with the $extras dependencies"
  fi
  VOLLEYIO_REQUIRE_EXTENSIONS=1 step "$what" \
    "$PY" -m pip install --no-build-isolation -e "$target"
}

# Real peers for the interop tests: Node packages and headless Chromium.
setup_peers() {
  if [ -f tests/js/package.json ]; then
    step "installing the Node packages for the interop tests (npm ci in tests/js)" \
      bash -c 'cd tests/js && npm ci --no-audit --no-fund --loglevel=error'
  fi
  # Debian packages the tests start themselves: Chromium, redis-server, nginx.
  local missing=()
  if [ -f scripts/apt-packages.txt ]; then
    for pkg in $(cat scripts/apt-packages.txt); do
      dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      step "installing Debian packages: ${missing[*]} (a few minutes on a fresh machine)" \
        bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]}"
    else
      echo "warning: not root; cannot apt-get install ${missing[*]}" >&2
    fi
  fi
}
