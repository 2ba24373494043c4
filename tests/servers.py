"""Real ``kws-serve`` processes on loopback for the tests: loadtest/local_server.py's, re-exported."""

from __future__ import annotations

import functools
from pathlib import Path

from loadtest.local_server import RunningServer, free_port, kws_serve, resident_mb, wait_until_ready

REPO = Path(__file__).resolve().parents[1]

# The tests' usual server: its output captured, so a failed start (or an unclean exit) shows why.
running_server = functools.partial(kws_serve, capture_output=True)

__all__ = ["REPO", "RunningServer", "free_port", "kws_serve", "resident_mb", "running_server", "wait_until_ready"]
