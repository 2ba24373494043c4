"""kws-serve measured with external HTTP clients, hey and wrk, so the figures do not rest on kws-loadtest alone.

    python -m benchmarks.external [--concurrency 1,4,16] [--seconds 10] [--workers 1]

Starts kws-serve on loopback (real uvicorn), writes one real clip (../shared/data/gsc/yes, else a generated
1 s WAV) as a multipart/form-data body, and runs, per concurrency, ``hey -z Ns -c C`` (Go, keep-alive) and
``wrk -c C --latency -s loadtest/wrk_recognize.lua`` (C, event loop; 1 thread below 4 connections, else 2)
against POST /v1/recognize. Closed loop: each connection sends its next request when the answer is in,
so past saturation these measure throughput, not the latency an arrival rate would see (kws-loadtest's
open loop does). The clients share the 2 cores with the server. Writes benchmarks/results/external.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.results import REPO, RESULTS, add_settings_argument, parse_settings
from loadtest.local_server import kws_serve

BOUNDARY = "kws-benchmark-boundary"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def multipart_body(clip: Path | None) -> bytes:
    if clip is not None:
        name, data, content_type = clip.name, clip.read_bytes(), "audio/flac" if clip.suffix == ".flac" else "audio/wav"
    else:
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000,
                        format="WAV", subtype="PCM_16")
        name, data, content_type = "noise.wav", buffer.getvalue(), "audio/wav"
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def run_hey(url: str, body: Path, concurrency: int, seconds: float) -> dict:
    out = subprocess.run(["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST",
                          "-T", f"multipart/form-data; boundary={BOUNDARY}", "-D", str(body), url],
                         capture_output=True, text=True, check=True).stdout
    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    percentile = {p: 1000 * float(s) for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": percentile.get("50"), "p99_ms": percentile.get("99"),
            "ok": statuses.get(200, 0), "errors": sum(n for code, n in statuses.items() if code != 200)}


def run_wrk(url: str, body: Path, concurrency: int, seconds: float) -> dict:
    env = {**os.environ, "KWS_WRK_BODY": str(body), "KWS_WRK_CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}"}
    threads = 1 if concurrency < 4 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
                          "-s", str(REPO / "loadtest" / "wrk_recognize.lua"), url],
                         capture_output=True, text=True, check=True, env=env).stdout
    percentile = {p: float(v) * UNITS[unit] for p, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": percentile.get("50"), "p99_ms": percentile.get("99"),
            "ok": requests - errors, "errors": errors + socket_errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc" / "yes")
    add_settings_argument(parser)
    parser.add_argument("--json", type=Path, default=RESULTS / "external.json")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    missing = [tool for tool in ("hey", "wrk") if shutil.which(tool) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} not found (Debian packages hey, wrk)")
    clips = sorted(args.clips.glob("*.flac")) if args.clips.is_dir() else []
    rows = []
    with tempfile.TemporaryDirectory() as folder, kws_serve("--workers", str(args.workers), **settings) as server:
        body = Path(folder) / "body.bin"
        body.write_bytes(multipart_body(clips[0] if clips else None))
        url = f"{server.base}/v1/recognize"
        run_hey(url, body, 4, 2)  # warm-up: arenas, caches, the first batch sizes
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for client, run in (("hey", run_hey), ("wrk", run_wrk)):
                rows.append({"client": client, "concurrency": concurrency, **run(url, body, concurrency, args.seconds)})
                print(f"{client:<5}{concurrency:>4} connections: {rows[-1]['requests_per_s']:8.1f} req/s, "
                      f"p50 {rows[-1]['p50_ms']:.1f} ms, p99 {rows[-1]['p99_ms']:.1f} ms, "
                      f"{rows[-1]['errors']} errors", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"workers": args.workers, "settings": settings, "clip": clips[0].name if clips else "generated",
                                     "seconds": args.seconds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
