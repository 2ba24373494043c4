"""onnxruntime's intra-op threads in the service's pattern: why inference in the service is slower than alone.

    python -m benchmarks.threads [--model service/models/kws10.onnx] [--requests 300] [--json F]

For the service's own session (service.inference.open_session) and each way of running it (2 threads with
onnxruntime's default spinning, 2 threads that stop spinning when a run ends, 2 threads that never spin,
1 thread), in one run on this machine:
  alone      session.run back to back on one window (what benchmarks.inference measures);
  service    the service's own code path in-process, no HTTP: an asyncio loop, decode + features on the
             preprocessing pool (service.audio, KeywordModel.windows), inference through the service's
             MicroBatcher and its inference thread, requests one after another (concurrency 1) and 4 at a
             time; inference_ms is what the service reports as latency_ms.inference.
  served     kws-serve itself (real uvicorn on loopback, one worker) with that session, under kws-loadtest's
             closed loop at concurrency 1 and 16 (``--served``): the server's own latency_ms.inference p50
             (from /v1/stats), the client's p50 and the request rate.
``--neighbour N`` runs N busy processes (a bare Python loop each) through every measurement: a noisy
neighbour, as a shared node or another engineer's job is.
Prints the medians and the request rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime

from benchmarks.results import REPO, add_settings_argument, parse_settings
from benchmarks.service import load_clips

# kws-serve with its session made the benchmark's way: service.inference.open_session replaced before start-up
LAUNCHER = """
import json, os, sys
import service.inference
from benchmarks.threads import session
threads, config = json.loads(os.environ["BENCHMARK_SESSION"])
if threads:
    service.inference.open_session = lambda path, intra_op_threads, inter_op_threads: session(path, threads, config)
from service.cli import main
sys.exit(main(sys.argv[1:]))
"""
VARIANTS = {
    "2 threads, spinning (onnxruntime default)": (2, {}),
    "2 threads, spinning stops after each run": (2, {"session.force_spinning_stop": "1"}),
    "2 threads, no spinning": (2, {"session.intra_op.allow_spinning": "0"}),
    "1 thread": (1, {}),
}


def session(path: Path, threads: int, config: dict[str, str]) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def alone_ms(model, features: np.ndarray, runs: int) -> float:
    for _ in range(10):
        model.infer(features)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.infer(features)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


async def service_pattern(model, clips: list[bytes], requests: int, concurrency: int) -> dict:
    from service.audio import AudioLimits, decode_audio
    from service.batching import MicroBatcher

    limits = AudioLimits(model.features.sample_rate, 0.1, 10.0, 8)
    loop = asyncio.get_running_loop()
    preprocess = ThreadPoolExecutor(4, thread_name_prefix="preprocess")  # the service's default pool
    batcher = MicroBatcher(model.infer, 16, 2.0, 64)  # as the service's state does
    batcher.start()
    inference, preparing, next_clip = [], [], iter(range(10**9))

    async def client() -> None:
        for _ in range(requests // concurrency):
            data = clips[next(next_clip) % len(clips)]
            started = time.perf_counter()
            with batcher.incoming():
                features = await loop.run_in_executor(preprocess, lambda: model.windows(decode_audio(data, limits).samples, 0.25))
            preparing.append(1000 * (time.perf_counter() - started))
            inference.append((await batcher.submit(features)).inference_ms)

    await asyncio.gather(*(client() for _ in range(concurrency)))  # warm-up
    inference.clear(), preparing.clear()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await batcher.stop()
    preprocess.shutdown()
    return {"inference_ms_p50": statistics.median(inference), "prepare_ms_p50": statistics.median(preparing),
            "requests_per_s": len(inference) / elapsed}


def served(model: Path, variant: tuple[int, dict] | None, clips: list[bytes], seconds: float, settings: dict) -> dict:
    import os
    import subprocess
    import sys

    import httpx

    from benchmarks.service import closed_loop
    from loadtest.local_server import free_port, wait_until_ready

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KWS_")}
    env.update({"PYTHONPATH": str(REPO), "KWS_LOG_LEVEL": "warning", "KWS_MODEL_PATH": str(model),
                "BENCHMARK_SESSION": json.dumps(variant or (0, {})),
                **{f"KWS_{k.upper()}": str(v) for k, v in settings.items()}})
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, row = f"http://127.0.0.1:{port}", {}
    try:
        wait_until_ready(base, process)
        for concurrency in (1, 16):
            throughput, latencies, errors = closed_loop(base, clips, concurrency, seconds)
            stats = httpx.get(f"{base}/v1/stats").json()["latency_ms"]
            row.update({f"served_rps@{concurrency}": throughput, f"served_p50_ms@{concurrency}": float(np.percentile(latencies, 50)),
                        f"served_inference_ms@{concurrency}": stats["inference"]["p50"], f"errors@{concurrency}": errors})
    finally:
        process.terminate()
        process.wait(timeout=30)
    return row


@contextlib.contextmanager
def neighbours(count: int):
    import subprocess
    import sys

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "service" / "models" / "kws10.onnx")
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--served", action="store_true", help="also time kws-serve itself with each session")
    parser.add_argument("--seconds", type=float, default=8.0, help="served: seconds per concurrency")
    add_settings_argument(parser, " (served only)")
    parser.add_argument("--neighbour", type=int, default=0, metavar="N", help="N busy processes run alongside")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from service.inference import KeywordModel

    threadpool_limits(limits=1, user_api="blas")  # as the service does
    clips = load_clips(args.clips if args.clips.exists() else None, 64)
    base = KeywordModel.load(args.model)
    window = base.windows(np.zeros(base.features.clip_samples, np.float32), 0.25)
    rows = []
    stack = contextlib.ExitStack()
    stack.enter_context(neighbours(args.neighbour))
    variants = {"the service's session (service.inference.open_session)": None, **VARIANTS}
    for name, variant in variants.items():
        model = base if variant is None else dataclasses.replace(base, session=session(args.model, *variant))
        row = {"variant": name, "alone_ms": alone_ms(model, window, args.requests)}
        for concurrency in (1, 4):
            for key, value in asyncio.run(service_pattern(model, clips, args.requests, concurrency)).items():
                row[f"{key}@{concurrency}"] = value
        if args.served:
            row.update(served(args.model, variant, clips, args.seconds, parse_settings(args.settings)))
        rows.append(row)
    stack.close()
    print(f"{'session':<56}{'alone ms':>10}{'service inference ms c1':>25}{'prepare ms c1':>15}"
          f"{'inference ms c4':>17}{'req/s c4':>10}")
    for r in rows:
        print(f"{r['variant']:<56}{r['alone_ms']:>10.2f}{r['inference_ms_p50@1']:>25.2f}{r['prepare_ms_p50@1']:>15.2f}"
              f"{r['inference_ms_p50@4']:>17.2f}{r['requests_per_s@4']:>10.1f}")
    if args.served:
        print(f"\n{'served by kws-serve':<56}{'inference ms c1':>16}{'p50 ms c1':>11}{'req/s c1':>10}"
              f"{'inference ms c16':>18}{'p50 ms c16':>12}{'req/s c16':>11}")
        for r in rows:
            print(f"{r['variant']:<56}{r['served_inference_ms@1']:>16.2f}{r['served_p50_ms@1']:>11.2f}{r['served_rps@1']:>10.1f}"
                  f"{r['served_inference_ms@16']:>18.2f}{r['served_p50_ms@16']:>12.2f}{r['served_rps@16']:>11.1f}")
    print("\n(medians; alone = session.run back to back on one window; service = the service's decode, features and "
          "MicroBatcher in-process, inference_ms as latency_ms.inference reports it)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
