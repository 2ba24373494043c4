"""A real kws-serve process on a free loopback port: started, waited for, stopped.

The one implementation used by the benchmarks and the tests (tests/servers.py re-exports it). It lives in
an installed package, so the tests need nothing from benchmarks/.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # holds the service package: the checkout, or site-packages
READY_TIMEOUT_S = 120.0  # generous: start-up loads the model on a shared 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), from /proc."""
    total_kb = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def wait_until_ready(base: str, process: subprocess.Popen | None = None, timeout: float = READY_TIMEOUT_S,
                     headers: dict[str, str] | None = None, output: Callable[[], str] | None = None,
                     path: str = "/readyz") -> None:
    """Polls ``BASE+path`` until it answers 200. Fails early when ``process`` (if given) exits, showing its
    ``output()`` when given; stopping a process that never got ready is left to its owner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}{path}", timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} during start-up:\n"
                               f"{output() if output else ''}")
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become ready within {timeout:g} s")


@dataclass
class RunningServer:
    base: str  # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen
    log: IO[str] | None = None  # the server's stdout + stderr, when started with capture_output

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything the server printed so far (empty without capture_output)."""
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@contextlib.contextmanager
def kws_serve(*args: str, capture_output: bool = False, **settings: str) -> Iterator[RunningServer]:
    """``python -m service.cli --port P ARGS`` with each setting as ``KWS_<NAME>=value``; yields it once ready,
    terminates it (then kills it) at the end.

    Inherited KWS_* variables are dropped, so the server runs with exactly these settings (and log level
    warning unless given). ``capture_output`` keeps its stdout + stderr in a temporary file (a pipe left
    unread could fill up and block the server), read with ``output()`` and shown when the start fails."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("KWS_")}
    env.update({"PYTHONPATH": str(SOURCE_ROOT), "KWS_LOG_LEVEL": "warning",
                **{f"KWS_{name.upper()}": str(value) for name, value in settings.items()}})
    log = tempfile.TemporaryFile("w+") if capture_output else None
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "--port", str(port), *args], cwd=SOURCE_ROOT, env=env,
                               stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)
    server = RunningServer(f"http://127.0.0.1:{port}", port, process, log)
    try:
        wait_until_ready(server.base, process, output=server.output)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log is not None:
            log.close()
