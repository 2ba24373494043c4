"""A kws-serve process for the benchmarks: started on a free loopback port, waited for, stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


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


@contextlib.contextmanager
def kws_serve(*args: str, **settings: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m service.cli ARGS`` with KWS_<NAME>=value settings; yields (base URL, process) once ready."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KWS_LOG_LEVEL": "warning",
           **{f"KWS_{k.upper()}": str(v) for k, v in settings.items()}}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "--port", str(port), *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"kws-serve {' '.join(args)} did not become ready")
            time.sleep(0.2)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
