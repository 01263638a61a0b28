"""Schemathesis fuzzes every operation of the served OpenAPI schema with valid and invalid
requests: no answer is a 5xx, and every answer matches the schema (status codes, content
types, bodies).

A schema cannot say what makes a file a video, so for uploads a schema-valid request may
still be refused (422, not a readable video): that one check is left out for them."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 15  # per operation; seeded, so every run sends the same requests


def test_api_never_fails_with_a_server_error(app):
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/search/video", "/api/search/text", "/api/zeroshot"}
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    cases = [
        (operation, mode)
        for operation in operations
        for mode in ((positive, negative) if _takes_input(operation) else (positive,))
    ]
    for operation, mode in cases:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            uploads = "multipart/form-data" in (case.media_type or "")
            case.call_and_validate(excluded_checks=[positive_data_acceptance] if uploads else None)

        fuzz()


def _takes_input(operation) -> bool:
    """Whether an operation has parameters or a body: one without has no invalid request."""
    return any(True for _ in operation.iter_parameters()) or bool(
        operation.get_request_payload_content_types()
    )
