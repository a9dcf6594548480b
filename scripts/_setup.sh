# Shared set-up for scripts/test and scripts/demo (sourced, not run).
# Creates .venv, installs volleyio in editable mode (compiling the extension; a
# failed compile is an error here) and the test dependencies.
VENV="${VOLLEYIO_VENV:-.venv}"
PY="$VENV/bin/python"

setup_python_env() {
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --upgrade pip setuptools wheel "Cython>=3.1"
  VOLLEYIO_REQUIRE_EXTENSIONS=1 "$PY" -m pip install -q --no-build-isolation -e ".[test,interop]"
}

# Real peers for the interop tests: Node packages and headless Chromium.
setup_peers() {
  if [ -f tests/js/package.json ]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
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
      echo "== installing Debian packages: ${missing[*]} (a few minutes on a fresh machine)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "warning: not root; cannot apt-get install ${missing[*]}" >&2
    fi
  fi
}
