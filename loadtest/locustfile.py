"""Locust scenario for the keyword service, for teams that already run locust.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000            (web UI on :8089)
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 16 -r 4 -t 60s

Environment: KWS_LOADTEST_CLIPS (a folder of audio files; default: generated 1 s WAV clips),
KWS_API_KEY (sent as X-API-Key). Locust users wait for each answer before sending the next request
(closed loop), so under overload its latencies understate the tail; ``kws-loadtest --rate`` measures
open-loop latency from the scheduled send time.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import FastHttpUser, between, task

from loadtest.clips import clips_for

_folder = os.environ.get("KWS_LOADTEST_CLIPS")
CLIPS = clips_for(Path(_folder) if _folder else None)
_next_clip = itertools.cycle(CLIPS)


class KeywordClient(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        key = os.environ.get("KWS_API_KEY")
        self.headers = {"X-API-Key": key} if key else {}

    @task(10)
    def recognize(self) -> None:
        clip = next(_next_clip)
        with self.client.post("/v1/recognize?top_k=3", files={"file": (clip.name, clip.data, clip.content_type)},
                              headers=self.headers, name="/v1/recognize", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif "label" not in response.json():
                response.failure("no label in the response")

    @task(1)
    def ready(self) -> None:
        self.client.get("/readyz", name="/readyz")
