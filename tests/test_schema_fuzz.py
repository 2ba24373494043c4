"""Schemathesis against the service's own OpenAPI schema, over HTTP to a real kws-serve: no request that
the schema describes (valid or not: schemathesis also breaks the schema on purpose) may get a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.servers import kws_serve

EXAMPLES_PER_OPERATION = 100


@pytest.fixture(scope="module")
def api_schema():
    with kws_serve(max_wait_ms="2") as server:  # output discarded: nothing reads it
        yield schemathesis.openapi.from_url(f"{server.base}/openapi.json")


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
