"""Service throughput and latency against the in-process pipeline, and against a PyTorch-serving baseline.

    python -m benchmarks.service [--requests 400] [--seconds 10] [--clips ../shared/data/gsc]

In one run on this machine:
  1. in-process pipeline, no HTTP: decode + features + ONNX model, one clip at a time (2 threads);
  2. kws-serve (real uvicorn on loopback) under closed-loop load at concurrency 1, 4 and 16;
  3. the same load against a minimal FastAPI app that runs the PyTorch checkpoint (the training-time
     DCLS form, what one would deploy with the paper's code), at concurrency 16.
Prints throughput, p50 and p99 per setting and the ratios the service is held to.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import add_settings_argument, parse_settings
from loadtest.local_server import free_port, kws_serve, wait_until_ready

REPO = Path(__file__).resolve().parents[1]

PYTORCH_APP = '''
import io, sys, numpy as np, soundfile, torch
from fastapi import FastAPI, File, UploadFile
from model.checkpoint import load_checkpoint
from model.features import fit_to_clip, log_mel
from model.network import class_scores
torch.set_num_threads(2)
checkpoint = load_checkpoint(sys.argv[1])
app = FastAPI()

@app.post("/v1/recognize")
async def recognize(file: UploadFile = File(...)):
    audio, rate = soundfile.read(io.BytesIO(await file.read()), dtype="float32", always_2d=True)
    features = log_mel(fit_to_clip(audio.mean(axis=1), checkpoint.feature_config), checkpoint.feature_config)
    with torch.no_grad():
        scores = class_scores(checkpoint.model(torch.from_numpy(features[None])).potentials)[0]
    return {"label": checkpoint.labels[int(scores.argmax())], "score": float(scores.max())}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def load_clips(root: Path | None, count: int) -> list[bytes]:
    if root is not None and (root / "manifest.csv").exists():
        import csv

        with open(root / "manifest.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["split"] == "validation"]
        step = max(1, len(rows) // count)
        return [(root / r["file"]).read_bytes() for r in rows[::step][:count]]
    import soundfile

    rng = np.random.default_rng(0)
    clips = []
    for _ in range(count):
        buffer = io.BytesIO()
        soundfile.write(buffer, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000, format="FLAC")
        clips.append(buffer.getvalue())
    return clips


def in_process(clips: list[bytes], model_path: Path, repeats: int) -> dict:
    from threadpoolctl import threadpool_limits

    from service.audio import AudioLimits, decode_audio
    from service.inference import KeywordModel

    threadpool_limits(limits=1, user_api="blas")  # as the service does (create_app)
    model = KeywordModel.load(model_path, intra_op_threads=2)
    limits = AudioLimits(model.features.sample_rate, 0.1, 10.0, 8)
    for clip in clips[:5]:
        model.run(model.windows(decode_audio(clip, limits).samples, 0.25))
    latencies = []
    started = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        audio = decode_audio(clips[i % len(clips)], limits)
        model.run(model.windows(audio.samples, 0.25))
        latencies.append(1000 * (time.perf_counter() - t0))
    elapsed = time.perf_counter() - started
    return summary("in-process pipeline", 1, repeats / elapsed, latencies)


def summary(name: str, concurrency: int, throughput: float, latencies: list[float], errors: int = 0) -> dict:
    array = np.array(latencies)
    return {"setting": name, "concurrency": concurrency, "throughput_rps": throughput,
            "p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99)), "errors": errors}


def closed_loop(base: str, clips: list[bytes], concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """kws-loadtest's closed loop (lean HTTP/1.1 client): throughput, latencies of the successes, errors."""
    from loadtest.clips import Clip
    from loadtest.runner import Sender
    from loadtest.runner import closed_loop as run_closed_loop

    async def run():
        requests = [Clip(f"clip-{i}.flac", data, "audio/flac") for i, data in enumerate(clips)]
        async with Sender(base, requests, timeout_s=120, max_connections=concurrency) as sender:
            await sender.warm_up(concurrency)
            return await run_closed_loop(sender, concurrency, seconds, warmup=1.0)

    result = asyncio.run(run())
    ok = [o.latency_ms for o in result.outcomes if o.status == "200"]
    return len(ok) / max(o.finished for o in result.outcomes), ok, len(result.outcomes) - len(ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "service" / "models" / "kws10.onnx")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts" / "kws10" / "model.pt")
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc")
    parser.add_argument("--requests", type=int, default=400, help="in-process pipeline: clips to time")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per HTTP setting")
    add_settings_argument(parser, " (the in-process pipeline has no VAD check)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    clips = load_clips(args.clips if args.clips.exists() else None, 64)
    rows = [in_process(clips, args.model, args.requests)]
    with kws_serve("--model", str(args.model), **settings) as server:
        for concurrency in (1, 4, 16):
            throughput, latencies, errors = closed_loop(server.base, clips, concurrency, args.seconds)
            rows.append(summary("kws-serve (ONNX, micro-batching)", concurrency, throughput, latencies, errors))

    if args.checkpoint.exists():
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(PYTORCH_APP)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        baseline = subprocess.Popen([sys.executable, script.name, str(args.checkpoint), str(port)], cwd=REPO, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_ready(base, baseline, path="/docs")  # the minimal app has no /readyz
            throughput, latencies, errors = closed_loop(base, clips, 16, args.seconds)
            rows.append(summary("PyTorch checkpoint in FastAPI", 16, throughput, latencies, errors))
        finally:
            baseline.terminate()
            baseline.wait(timeout=30)
            os.unlink(script.name)

    print(f"{'setting':<36}{'conc.':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in rows:
        print(f"{r['setting']:<36}{r['concurrency']:>6}{r['throughput_rps']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}")
    pipeline = rows[0]
    service = [r for r in rows if r["setting"].startswith("kws-serve")]
    saturation = max(service, key=lambda r: r["throughput_rps"])
    print(f"\nservice throughput at saturation / in-process throughput: "
          f"{saturation['throughput_rps'] / pipeline['throughput_rps']:.2f}  (bar >= 0.70)")
    print(f"service p50 at concurrency 1 - in-process p50: {service[0]['p50_ms'] - pipeline['p50_ms']:+.2f} ms  (bar <= +3 ms)")
    pytorch = [r for r in rows if r["setting"].startswith("PyTorch")]
    if pytorch:
        print(f"service throughput / PyTorch-serving throughput at concurrency 16: "
              f"{[r for r in service if r['concurrency'] == 16][0]['throughput_rps'] / pytorch[0]['throughput_rps']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
