"""For the CLI: files of prompts (text, CSV, JSON Lines) and jobs shown as a table."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIELDS = ("prompt", "aspect_ratio", "medium", "metadata")


class BatchFileError(ValueError):
    """The file cannot be read as requests; the message names the line."""


@dataclass(frozen=True)
class Line:
    """One request of a batch file and the line it came from."""

    number: int
    request: dict[str, Any]

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))


@dataclass
class Outcome:
    """What became of one line: a job, or the API's refusal."""

    line: Line
    job: dict[str, Any] | None = None
    error: dict[str, Any] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"line": self.line.number}
        result.update({"job": self.job} if self.job else {"error": self.error})
        return result


def read_batch(path: Path) -> list[Line]:
    """Requests from a .csv, a .jsonl (or .ndjson) file, or any other file of one prompt a line.

    CSV and JSON Lines take the columns prompt, aspect_ratio, medium, metadata (a JSON object).
    Blank lines, and lines starting with # in a text file, are skipped.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(f"{path}: cannot be read ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        lines = list(_csv_lines(path, text))
    elif suffix in (".jsonl", ".ndjson"):
        lines = list(_jsonl_lines(path, text))
    else:
        lines = [
            Line(number, {"prompt": row.strip()})
            for number, row in enumerate(text.splitlines(), start=1)
            if row.strip() and not row.lstrip().startswith("#")
        ]
    if not lines:
        raise BatchFileError(f"{path}: no prompts in it")
    return lines


def _checked(path: Path, number: int, row: dict[str, Any]) -> Line:
    where = f"{path}:{number}"
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise BatchFileError(f"{where}: unknown column {unknown[0]!r} (known: {', '.join(FIELDS)})")
    request = {k: v for k, v in row.items() if v not in (None, "")}
    if not isinstance(request.get("prompt"), str) or not request["prompt"].strip():
        raise BatchFileError(f"{where}: prompt is missing")
    metadata = request.get("metadata")
    if isinstance(metadata, str):
        try:
            request["metadata"] = metadata = json.loads(metadata)
        except ValueError:
            raise BatchFileError(f"{where}: metadata is not JSON") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise BatchFileError(f"{where}: metadata must be a JSON object")
    return Line(number, request)


def _csv_lines(path: Path, text: str) -> Iterable[Line]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise BatchFileError(f"{path}:1: the header must name a prompt column")
    for row in reader:
        if None in row:
            raise BatchFileError(f"{path}:{reader.line_num}: more cells than columns")
        if any((value or "").strip() for value in row.values()):
            yield _checked(path, reader.line_num, dict(row))


def _jsonl_lines(path: Path, text: str) -> Iterable[Line]:
    for number, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        try:
            value = json.loads(row)
        except ValueError:
            raise BatchFileError(f"{path}:{number}: not JSON") from None
        if not isinstance(value, dict):
            raise BatchFileError(f"{path}:{number}: must be a JSON object")
        yield _checked(path, number, value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, widest: int = 60) -> str:
    """Rows as aligned text columns under a header; long cells are cut to `widest`."""
    cells = [[_cell(value, widest) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def _cell(value: Any, widest: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= widest else text[: widest - 1] + "…"


JOB_COLUMNS = ("id", "status", "images", "created", "prompt")


def job_row(job: dict[str, Any]) -> list[Any]:
    items = job.get("items") or []
    with_ids = sum(1 for item in items if item.get("dp_item_id"))
    created = (job.get("created_at") or "")[:19].replace("T", " ")
    return [job["id"], job["status"], f"{with_ids}/{len(items)}", created, job["prompt"]]


def outcomes_table(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for outcome in outcomes:
        if outcome.job:
            rows.append([outcome.line.number, *job_row(outcome.job)])
        else:
            error = (outcome.error or {}).get("message") or "refused"
            rows.append(
                [outcome.line.number, "-", "refused", "", "", f"{outcome.line.prompt} ({error})"]
            )
    return table(("line", *JOB_COLUMNS), rows)


def tally(outcomes: Sequence[Outcome]) -> str:
    """ "20 jobs: 19 completed, 1 failed" (refused lines counted too)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        status = outcome.job["status"] if outcome.job else "refused"
        counts[status] = counts.get(status, 0) + 1
    parts = ", ".join(
        f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return f"{len(outcomes)} lines: {parts}"
