#!/usr/bin/env bash
# Runs the test suite. On a fresh machine it first makes .venv and installs the project with every extra
# (torch is pinned to 2.13.0, the CPU build). Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "$TEST_EXTRAS"
exec "$VENV/bin/python" -m pytest "$@"
