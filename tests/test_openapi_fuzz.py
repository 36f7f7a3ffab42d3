"""schemathesis against our own /openapi.json: no 5xx, responses that match their schema."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from candor.app import Runtime, create_app
from candor.auth import ROLES
from candor.config import Settings
from tests.helpers import basic, bearer

_DIR = Path(tempfile.mkdtemp(prefix="candor-fuzz-"))
RT = Runtime(
    Settings.from_env(
        env={},
        data_dir=_DIR,
        rate_staff_per_token="1000000/second",
        rate_collect_per_key="1000000/second",
        rate_collect_per_ip="1000000/second",
        rate_auth_failures_per_ip="1000000/minute",
    )
)
WRITE_KEY = RT.directory.create_source("fuzz")
ROLE_TOKENS = {role: RT.directory.create_token(f"fuzz {role}", role) for role in ROLES}
APP = create_app(runtime=RT)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)

CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", autouse=True)
def _close() -> Any:
    yield
    RT.close()


@schema.include(path_regex=r"^/v1/(identify|track|page|screen|group|alias|batch|import)$").parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_collection_endpoints(case: Any) -> None:
    case.call_and_validate(headers=basic(WRITE_KEY), checks=CHECKS)


@schema.include(path_regex=r"^/v1/(identify|track|batch)$").parametrize()
@settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_collection_endpoints_without_credentials(case: Any) -> None:
    # Without a write key nothing is ever accepted: malformed bodies are 4xx, the rest 401.
    response = case.call()
    assert 400 <= response.status_code < 500, response.status_code


@schema.exclude(path_regex=r"^/v1/(identify|track|page|screen|group|alias|batch|import)$").parametrize()
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_other_route_with_each_role(case: Any) -> None:
    """Every staff and public route, called with the token of every role: no 5xx, and every
    response (allowed or refused) matches the documented status codes and schemas."""
    for token in ROLE_TOKENS.values():
        case.call_and_validate(headers=bearer(token), checks=CHECKS)
