"""Schemathesis against the service's own OpenAPI schema, over HTTP to a real kws-serve: no request that
the schema describes (valid or not: schemathesis also breaks the schema on purpose) may get a 5xx."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_PER_OPERATION = 100


@pytest.fixture(scope="module")
def api_schema():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "KWS_LOG_LEVEL": "warning", "KWS_MAX_WAIT_MS": "2"}
    env.pop("KWS_API_KEY", None)
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the server exited during start-up"
        time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError("server did not become ready")
    yield schemathesis.openapi.from_url(f"{base}/openapi.json")
    process.terminate()
    process.wait(timeout=20)


def test_no_server_errors(api_schema):
    """Positive and negative cases for every operation. (Driven by hand rather than through schemathesis'
    pytest plugin, whose lazy fixture loader does not run under pytest 9.)"""
    calls: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case) -> None:
                response = case.call(timeout=30)
                case.validate_response(response, checks=[not_a_server_error])
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

            try:
                call()
            except Unsatisfiable:  # an operation without inputs has no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"\nschemathesis requests per operation: {calls}")
    assert {"POST /v1/recognize", "POST /v1/recognize/batch", "GET /v1/models", "GET /readyz"} <= set(calls), calls
