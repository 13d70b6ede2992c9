"""The OpenAPI document fuzzed with schemathesis: every operation, requests generated from the
schema (positive: valid by it; negative: breaking it), against the real app over a registry
with two tasks. No answer is a 5xx, and every 4xx carries the one-line error body. 15
operations x (25 positive + 15 negative) cases where the schema allows that many: 500+
requests, counted and asserted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

POSITIVE, NEGATIVE = 25, 15


def fuzz(operation: Any, mode: GenerationMode, n: int, seen: Counter, statuses: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        response = case.call()
        seen[operation.label] += 1
        statuses[response.status_code] += 1
        where = (case.method, case.formatted_path, response.text[:300])
        assert response.status_code < 500, where
        if 400 <= response.status_code < 500:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], where
            assert "\n" not in body["error"] and "Traceback" not in body["error"], where
            assert {"field", "row"} <= set(body), where

    try:
        check()
    except Unsatisfiable:  # nothing to break: an operation without parameters
        assert mode == GenerationMode.NEGATIVE, operation.label


@pytest.mark.slow
def test_no_5xx_and_one_line_errors(home: Path, client_for) -> None:
    client = client_for(home, rate=1e6)  # the rate limit has its own test
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    seen: Counter = Counter()
    statuses: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz(operation, GenerationMode.POSITIVE, POSITIVE, seen, statuses)
        fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE, seen, statuses)
    print(f"fuzzed {sum(seen.values())} requests over {len(seen)} operations: {dict(statuses)}")
    assert len(seen) >= 15, seen
    assert sum(seen.values()) >= 500, seen
    assert statuses[200] > 50 and sum(v for k, v in statuses.items() if k >= 400) > 100, statuses
