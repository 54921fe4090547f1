"""The OpenAPI document: kept current in the repository, and the server keeps its promises
(schemathesis: no 5xx, every response matches the document)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok

from tether.server import openapi_document
from tether.server._openapi import render

from .process import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_document_in_the_repository_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/openapi.json is stale: python -m tether.server._openapi > docs/openapi.json")


def test_every_served_route_is_documented(server: ServerProcess) -> None:
    import httpx

    served = httpx.get(f"{server.url}/v1/openapi.json").json()
    assert served == json.loads(render())
    assert set(openapi_document()["paths"]) >= {"/v1/runs", "/v1/runs/{run_id}/events",
                                                 "/v1/approvals", "/v1/audit/verify"}


def test_the_api_matches_its_document(server: ServerProcess) -> None:
    """Every operation but the endless event stream, with a bounded number of examples."""
    api = schemathesis.openapi.from_url(f"{server.url}/v1/openapi.json")
    headers = {"Authorization": f"Bearer {server.key}"}
    checked = 0
    for result in api.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case: schemathesis.Case[Any]) -> None:
            # Opaque values (a cursor, a run id) that fit their schema may still name nothing
            # this server issued: a clear 400/404 there is right, not a broken promise.
            case.call_and_validate(headers=headers,
                                   excluded_checks=[checks.positive_data_acceptance])

        check()
        checked += 1
    assert checked >= 15
