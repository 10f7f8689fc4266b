"""Schemathesis against the live app (gunicorn on loopback), from the document it serves.

Every operation gets requests valid and invalid by the schema: its examples, the coverage
phase's boundary values, then generated ones (25 per operation, deterministic, so the suite
is repeatable: see tests/schemathesis.toml). No answer may be a 5xx; each must be a documented
status with a documented content type, headers and body; a request the schema forbids must be
refused with a 4xx; and a protected operation must refuse a missing token.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webhook_app.tools.stack import Stack

pytestmark = pytest.mark.e2e

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
]


def test_generated_requests_get_documented_answers_and_never_a_5xx(
    stack: Stack, tmp_path: Path
) -> None:
    stack.migrate()
    stack.start_web()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli"),
            *("--config-file", str(Path(__file__).with_name("schemathesis.toml"))),
            "run",
            f"{stack.url}/api/v1/openapi.json",
            *("--header", f"Authorization: Bearer {stack.token}"),
            *("--checks", ",".join(CHECKS)),
            *("--phases", "examples,coverage,fuzzing"),
            *("--workers", "1", "--no-color"),
            *("--report-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its cache of crashes goes there
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
