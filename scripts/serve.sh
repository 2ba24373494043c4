#!/usr/bin/env bash
# Serves the shipped kws10 model on http://127.0.0.1:8000 (docs at /docs). On a fresh machine it first makes
# .venv and installs the project with the `serve` extra (no torch). Extra arguments go to kws-serve,
# e.g. scripts/serve.sh --host 0.0.0.0 --port 8080; every setting also reads KWS_* environment variables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "serve"
exec "$VENV/bin/kws-serve" "$@"
