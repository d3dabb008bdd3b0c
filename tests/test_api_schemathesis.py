"""Schemathesis against `/openapi.json`: generated requests (valid and invalid) for every
operation, a bounded number each. Every answer must be no 5xx, have a documented status and
content type, and match the documented schema; invalid input must be refused."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from controller.config import load_settings
from controller.context import open_context

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def _app() -> tuple[Any, Any, Path]:
    # Built at import: schemathesis reads the document while collecting the tests. (Its lazy
    # `from_fixture` loader does not work with pytest 9.)
    data_dir = Path(tempfile.mkdtemp(prefix="ezrec-schemathesis-"))
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EZREC")}
    with mock.patch.dict(os.environ, clean, clear=True):
        settings = load_settings(
            data_dir=data_dir, device_id="st", camera_driver="synthetic", width=160,
            height=120, fps=5, cameras=1, api_token=TOKEN,
        )
    ctx = open_context(settings)
    # Something to find: generated ids are random, so most lookups are 404s; these are not.
    start = datetime.now(UTC) + timedelta(days=30)
    for i, booking_id in enumerate(("a", "b", "c0", "0")):
        ctx.store.create(start + timedelta(hours=2 * i), start + timedelta(hours=2 * i + 1),
                         booking_id=booking_id)
    ctx.store.fire("b", "start")
    ctx.store.fire("b", "fail", error="camera died")
    return create_app(context=ctx), ctx, data_dir


APP, CTX, DATA_DIR = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    CTX.close()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)
