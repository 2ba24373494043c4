"""kws-loadtest and the locustfile against a real kws-serve on loopback."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from loadtest.clips import generated_clips, load_clips
from loadtest.report import saturation, summarize
from loadtest.runner import (
    Outcome,
    RunResult,
    Sender,
    closed_loop,
    open_loop,
    poisson_schedule,
)
from tests.servers import REPO, running_server


def test_poisson_schedule_has_the_rate_and_exponential_gaps():
    rng = np.random.default_rng(3)
    times = poisson_schedule(50.0, 200.0, rng)
    assert abs(len(times) - 10_000) < 5 * np.sqrt(10_000)
    gaps = np.diff(times)
    assert abs(gaps.mean() - 0.02) < 0.001
    assert abs(np.median(gaps) - 0.02 * np.log(2)) < 0.001  # exponential: median = mean * ln 2
    assert times.min() >= 0 and times.max() < 200.0 and np.all(gaps > 0)


def test_summary_counts_statuses_and_only_successes_in_latency():
    outcomes = [Outcome(i * 0.1, i * 0.1 + 0.05, "200", {"total": 40.0}) for i in range(98)]
    outcomes += [Outcome(1.0, 1.001, "503"), Outcome(2.0, 32.0, "timeout")]
    summary = summarize(RunResult("open", 10.0, None, 10.0, outcomes))
    assert summary["status_counts"] == {"200": 98, "503": 1, "timeout": 1}
    assert summary["error_rate"] == pytest.approx(0.02)
    assert summary["latency_ms"]["max"] == pytest.approx(50.0)  # the 30 s timeout is an error, not a latency
    assert summary["throughput_rps"] == pytest.approx(98 / 32.0)  # goodput over the span the answers took
    assert summary["server_latency_ms"]["total"]["p50"] == pytest.approx(40.0)


def test_saturation_is_the_last_sustained_rate_before_the_first_failure():
    def run(rate, served, errors=0.0):
        return {"offered_rps": rate, "arrival_rps": rate, "throughput_rps": served, "error_rate": errors}

    sweep = [run(10, 10), run(20, 19.8), run(40, 30), run(60, 60)]  # 60 recovered by luck: still past the knee
    assert saturation(sweep)["offered_rps"] == 20
    assert saturation([run(10, 10, errors=0.05)]) is None


def test_clips_from_a_folder_and_generated(tmp_path):
    for clip in generated_clips(3):
        (tmp_path / clip.name).write_bytes(clip.data)
    (tmp_path / "notes.txt").write_text("not audio")
    clips = load_clips(tmp_path, limit=2)
    assert len(clips) == 2 and all(c.content_type == "audio/wav" for c in clips)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        load_clips(tmp_path / "empty", limit=2)


@pytest.fixture(scope="module")
def server():
    with running_server(max_wait_ms="5") as running:
        yield running


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadtest.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_sweep_writes_table_json_and_plot(server, tmp_path):
    result = run_cli("--url", server.base, "--sweep", "4,8", "--duration", "2", "--warmup", "0.5",
                     "--at-fractions", "0.5", "--json", str(tmp_path / "sweep.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert [run["offered_rps"] for run in report["sweep"]] == [4.0, 8.0]
    assert report["saturation"]["offered_rps"] == 8.0  # a few requests per second are far below capacity
    assert report["at_fractions"][0]["offered_rps"] == pytest.approx(0.5 * report["saturation"]["throughput_rps"])
    for run in report["runs"]:
        assert run["status_counts"] == {"200": run["requests"]}
        assert set(run["server_latency_ms"]) == {"decode", "features", "queue", "inference", "vad", "total"}
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "saturation:" in result.stdout and "p99.9" in result.stdout and "inference" in result.stdout


def test_closed_loop_with_real_clips(server, data_dir, tmp_path):
    result = run_cli("--url", server.base, "--concurrency", "2", "--duration", "2", "--warmup", "0.5",
                     "--clips", str(data_dir / "gsc" / "yes"), "--max-clips", "8", "--json", str(tmp_path / "c.json"))
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "c.json").read_text())["runs"][0]
    assert run["mode"] == "closed" and run["concurrency"] == 2 and run["error_rate"] == 0 and run["requests"] > 4


def test_errors_are_counted_by_status_and_fail_the_error_budget(tmp_path):
    import soundfile

    # 96 kB: over the 64 kB upload limit, yet small enough that the server reads it all and the client sees
    # the 413 (a much larger body is cut off mid-send, which clients see as a reset: "connection_error").
    soundfile.write(tmp_path / "big.wav", np.zeros(24000, dtype=np.float32), 16000, subtype="FLOAT")
    with running_server(max_upload_bytes="65536") as small:
        result = run_cli("--url", small.base, "--rate", "5", "--duration", "1.5", "--warmup", "0",
                         "--clips", str(tmp_path), "--max-error-rate", "0", "--json", str(tmp_path / "e.json"))
    assert result.returncode == 1 and "error-rate limit" in result.stderr
    run = json.loads((tmp_path / "e.json").read_text())["runs"][0]
    assert set(run["status_counts"]) == {"413"} and run["error_rate"] == 1.0 and run["latency_ms"]["p50"] is None


def test_unreachable_server_is_a_clear_error():
    result = run_cli("--url", "http://127.0.0.1:9", "--rate", "1", "--duration", "1")
    assert result.returncode != 0 and "cannot reach http://127.0.0.1:9/readyz" in result.stderr


def test_open_loop_shows_a_server_stall_that_closed_loop_hides():
    """SIGSTOP the server for 1.5 s mid-run: every request due during the stall must carry the wait."""
    clips = generated_clips(4)

    async def measure(mode: str, pid: int, base: str):
        stall = threading.Timer(1.0, lambda: (os.kill(pid, signal.SIGSTOP), time.sleep(1.5), os.kill(pid, signal.SIGCONT)))
        async with Sender(base, clips, timeout_s=30, max_connections=100) as sender:
            await sender.warm_up(2)
            stall.start()
            if mode == "open":
                return await open_loop(sender, rate=20.0, duration=4.0, warmup=0.0, seed=1)
            return await closed_loop(sender, concurrency=1, duration=4.0, warmup=0.0)

    with running_server() as stalled:
        open_run = asyncio.run(measure("open", stalled.pid, stalled.base))
        closed_run = asyncio.run(measure("closed", stalled.pid, stalled.base))
    slow_open = sum(o.latency_ms > 500 for o in open_run.outcomes)
    slow_closed = sum(o.latency_ms > 500 for o in closed_run.outcomes)
    assert all(o.status == "200" for o in open_run.outcomes + closed_run.outcomes)
    assert slow_open >= 10  # ~30 arrivals fall in the stall, each delayed by the rest of it
    assert slow_closed <= 2  # one client just waits once: the stall looks like a single slow request
    assert max(o.latency_ms for o in open_run.outcomes) > 1000


@pytest.mark.slow
def test_locustfile_runs_headless_without_failures(server, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--host", server.base, "--headless",
         "-u", "2", "-r", "2", "-t", "3s", "--stop-timeout", "60", "--csv", str(tmp_path / "locust"), "--only-summary"],
        cwd=REPO, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "locust_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    # How many requests fit in 3 s depends on the machine (on two busy cores, once, none had finished);
    # --stop-timeout lets every user finish the request it has in flight at the deadline, so it is counted.
    assert int(rows["/v1/recognize"]["Request Count"]) >= 1, rows
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_connection_pool_reads_chunked_replies_and_retries_a_closed_keep_alive_connection():
    """Against a small real HTTP server that answers chunked and closes each connection after one reply."""
    from loadtest.http import ConnectionPool, multipart_request

    async def scenario():
        seen = []

        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])
            seen.append(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            await writer.drain()
            writer.close()  # closes without saying "Connection: close": the pool must notice on reuse

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool(f"http://127.0.0.1:{port}", max_connections=1)
        request = multipart_request(f"http://127.0.0.1:{port}", "/v1/recognize", "file", 'a"b.wav', b"RIFF1234", "audio/wav")
        first = await pool.exchange(request, timeout_s=5)
        await asyncio.sleep(0.1)
        second = await pool.exchange(request, timeout_s=5)
        await pool.close()
        server.close()
        return first, second, seen

    first, second, seen = asyncio.run(scenario())
    assert first.status == second.status == 200 and first.body == second.body == b"hello world"
    assert first.headers["retry-after"] == "7"
    assert len(seen) == 2 and b'filename="a_b.wav"' in seen[0] and b"RIFF1234" in seen[0]
