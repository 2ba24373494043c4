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
Prints the medians and the request rate at concurrency 4.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime

from benchmarks.service import load_clips

REPO = Path(__file__).resolve().parents[1]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "service" / "models" / "kws10.onnx")
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from service.inference import KeywordModel

    threadpool_limits(limits=1, user_api="blas")  # as the service does
    clips = load_clips(args.clips if args.clips.exists() else None, 64)
    base = KeywordModel.load(args.model)
    window = base.windows(np.zeros(base.features.clip_samples, np.float32), 0.25)
    rows = []
    variants = {"the service's session (service.inference.open_session)": None, **VARIANTS}
    for name, variant in variants.items():
        model = base if variant is None else dataclasses.replace(base, session=session(args.model, *variant))
        row = {"variant": name, "alone_ms": alone_ms(model, window, args.requests)}
        for concurrency in (1, 4):
            for key, value in asyncio.run(service_pattern(model, clips, args.requests, concurrency)).items():
                row[f"{key}@{concurrency}"] = value
        rows.append(row)
    print(f"{'session':<56}{'alone ms':>10}{'service inference ms c1':>25}{'prepare ms c1':>15}"
          f"{'inference ms c4':>17}{'req/s c4':>10}")
    for r in rows:
        print(f"{r['variant']:<56}{r['alone_ms']:>10.2f}{r['inference_ms_p50@1']:>25.2f}{r['prepare_ms_p50@1']:>15.2f}"
              f"{r['inference_ms_p50@4']:>17.2f}{r['requests_per_s@4']:>10.1f}")
    print("\n(medians; alone = session.run back to back on one window; service = the service's decode, features and "
          "MicroBatcher in-process, inference_ms as latency_ms.inference reports it)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
