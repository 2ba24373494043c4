#!/usr/bin/env bash
# Runs the test suite. On a fresh machine it first makes .venv and installs the project with every extra
# (torch is pinned to 2.13.0, the CPU build). Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KWS_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[train,serve,export,dev]"
    touch "$stamp"
fi
exec "$VENV/bin/python" -m pytest "$@"
