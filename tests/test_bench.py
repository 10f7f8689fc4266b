"""The benchmark kit in its smoke mode: every section measured and written, so it never rots.

Figures are printed, never asserted: only what must hold whatever the speed is checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "## Machine",
    "## Versions",
    "## Configuration",
    "## Conditions",
    "## 1. Callback ingestion",
    "## 2. Query API at scale",
    "## 3. End to end",
    "## 4. Memory",
    "## 5. Scaling",
    "## 6. A tool watching jobs",
)
SPREAD = re.compile(r"\d+(\.\d+)? \[\d+(\.\d+)? - \d+(\.\d+)?\]")


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^(## .+)$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def run_module(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m module args` from the project root; it must succeed."""
    run = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return run


def test_smoke_run_writes_every_section(
    postgres_server: str, redis_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "RESULTS.md"
    services = ["--postgres", postgres_server, "--redis", redis_url]
    run_module("bench", "--smoke", "--output", str(output), *services, timeout=600)
    text = output.read_text()
    print(text)
    found = sections(text)
    assert list(found) == list(SECTIONS)
    for name in SECTIONS[4:7] + SECTIONS[8:]:
        assert SPREAD.search(found[name]), f"{name} has no median [min - max] figure"

    ingestion = found["## 1. Callback ingestion"]
    stored = re.search(r"answered 2xx \| (\d+) = (\d+) ", ingestion)
    assert stored and int(stored[1]) == int(stored[2]) > 0, ingestion
    assert "| errors (service, every run) | 0 |" in ingestion

    queries = found["## 2. Query API at scale"]
    assert queries.count("```") >= 2 * 5 and "Limit" in queries  # a plan per list query shape

    end_to_end = found["## 3. End to end"]
    completed = re.search(r"jobs completed / created \(last run\) \| (\d+) / (\d+) ", end_to_end)
    assert completed and completed[1] == completed[2], end_to_end
    assert "database round trips per job" in end_to_end
    memory = found["## 4. Memory"]
    assert re.search(r"\| gunicorn \(service\) \| load 2 \| [\d.]+, [\d.]+ \|", memory), memory
    assert re.search(r"\| Celery worker \| end-to-end 2 \| [\d.]+, [\d.]+, [\d.]+ \|", memory)
    watching = found["## 6. A tool watching jobs"]
    for way in (
        "get-one per job, first round",
        "get-one per job |",
        "conditional get-one",
        "changes feed, asked",
        "bare lookup",
    ):
        assert f"| {way}" in watching, way
    assert "changes not seen" not in text and "watching," not in text  # no errors, none missed


def test_profiles_show_where_each_hot_path_spends_its_time(
    postgres_server: str, redis_url: str
) -> None:
    services = ["--postgres", postgres_server, "--redis", redis_url]
    run = run_module("bench.profile", "--calls", "40", *services, timeout=300)
    paths = re.split(r"^## ", run.stdout, flags=re.MULTILINE)[1:]
    # Each path's tree reaches the service's own function for it.
    for title, function in (
        ("callback", "store_delivery"),
        ("applying", "_apply_batch"),
        ("get-one", "job_view"),
        ("list page", "views_of_rows"),
        ("submission task", "submit_job"),
    ):
        found = [path for path in paths if path.startswith(title)]
        assert found and re.match(r"[^\n]*: \d+ calls, [\d.]+ ms CPU each", found[0]), title
        assert function in found[0], f"{title}: {function} not in its profile"
