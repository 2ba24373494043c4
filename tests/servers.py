"""Real ``kws-serve`` processes on loopback for the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    base: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def wait_until_ready(base: str, process: subprocess.Popen, timeout: float = 60.0, headers: dict | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"kws-serve exited with {process.returncode}:\n{process.stdout.read() if process.stdout else ''}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError("kws-serve did not become ready")


@contextlib.contextmanager
def running_server(*args: str, **settings: str) -> Iterator[RunningServer]:
    """``python -m service.cli`` on a free port; ``settings`` become KWS_<NAME> environment variables."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KWS_LOG_LEVEL": "warning",
           **{f"KWS_{name.upper()}": str(value) for name, value in settings.items()}}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "--port", str(port), *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield RunningServer(base, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
