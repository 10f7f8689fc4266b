"""The query API's answers, each declared once.

A `TypedDict` per answer: `web/serialize.py` builds them (so mypy checks every key), the
OpenAPI document's schemas are made from them (`web/openapi.py`), and the HTTP client
(`tools/client.py`) hands them out. What JSON Schema says beyond the Python type (a format,
a bound, a description) rides along as `Annotated[..., Schema(...)]`. Fields are declared in
the order the answers list them.

Only `typing` is imported here: the client imports this module without the server's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict


@dataclass(frozen=True)
class Schema:
    """JSON Schema keywords of a field beyond its type, or (`ref`) a component it is instead."""

    keywords: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None


def doc(description: str, **keywords: Any) -> Schema:
    return Schema({**keywords, "description": description})


# A job's status (states.JobStatus).
Status = Literal[
    "queued", "submitting", "submitted", "processing", "timed_out", "completed", "failed"
]
Submission = Literal["in_flight", "retry", "unknown"]
ArchiveState = Literal["pending", "archived", "failed"]
# What became of a callback delivery (services.progress.Outcome).
Outcome = Literal[
    "pending",
    "applied",
    "no_change",
    "unconfirmed",
    "mismatch",
    "unparseable",
    "upstream_failure",
    "error",
]

Time = Annotated[str, Schema({"format": "date-time"})]
MaybeTime = Annotated[str | None, Schema({"format": "date-time"})]
Count = Annotated[int, Schema({"minimum": 0})]


class Archive(TypedDict):
    state: ArchiveState
    url: str
    sha256: str | None
    size: int | None
    content_type: str | None
    width: int | None
    height: int | None
    archived_at: MaybeTime
    attempts: Count
    error: str | None


class Item(TypedDict):
    uuid: str
    dp_item_id: int | None
    preview_url: str | None
    width: int | None
    height: int | None
    type: str | None
    image_url: Annotated[
        str | None, doc("our archived copy once kept, else the upstream's preview URL")
    ]
    archive: Annotated[
        Archive | None, doc("our copy of the image: `state` pending, archived or failed")
    ]


class Links(TypedDict):
    self: str
    events: str
    deliveries: str


class Job(TypedDict):
    id: str
    version: Annotated[
        int,
        doc(
            "grows with every change to the job, its items or archives; "
            "the answer's ETag is made of it",
            minimum=1,
        ),
    ]
    kind: str
    status: Status
    prompt: str
    aspect_ratio: str | None
    medium: str | None
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    generation_uuid: str | None
    upstream_status: str | None
    purchase_status: str | None
    submission: Annotated[
        Submission | None, doc("where the submission stands while the job is `submitting`")
    ]
    attempts: Count
    last_error: Annotated[dict[str, Any] | None, Schema(ref="LastError")]
    retry_of: Annotated[str | None, doc("the job an operator retried as this one")]
    items: list[Item]
    results_archived: Annotated[bool, doc("every item's image is kept in our own archive")]
    created_at: Time
    updated_at: Time
    submitted_at: MaybeTime
    finished_at: MaybeTime
    deadline_at: Time
    links: Links


class JobPage(TypedDict):
    jobs: list[Job]
    next_cursor: Annotated[
        str | None, doc("pass back as `cursor` for the next page; null on the last")
    ]


class ChangesPage(TypedDict):
    jobs: Annotated[
        list[Job], doc("jobs changed after the cursor, in the order of their last change")
    ]
    next_cursor: Annotated[str, doc("pass back as `changed_after` for the changes after these")]
    more: Annotated[bool, doc("more changes are there already: ask again at once")]


class BatchJobs(TypedDict):
    jobs: Annotated[list[Job], doc("the jobs found, in the order asked, each once")]
    missing: Annotated[list[str], doc("the ids asked for that no job has")]


class Stats(TypedDict):
    jobs: dict[Status, Count]
    total: Count


# "from" is a keyword in Python: read it as event["from"].
Event = TypedDict(
    "Event",
    {
        "at": Time,
        "source": str,
        "from": str | None,
        "to": str,
        "detail": dict[str, Any] | None,
    },
)


class Delivery(TypedDict):
    id: int
    received_at: Time
    last_received_at: Time
    received_count: Annotated[int, Schema({"minimum": 1})]
    outcome: Outcome
    detail: str | None
    applied_at: MaybeTime
    content_type: str | None
    headers: dict[str, str] | None
    source_addr: str | None
    body: Annotated[str, doc("as it arrived (hex when not UTF-8)")]
    body_encoding: Literal["utf-8", "hex"]


# The answers the OpenAPI document names as components, by their class names.
COMPONENTS: tuple[type, ...] = (
    Archive,
    Item,
    Job,
    JobPage,
    ChangesPage,
    BatchJobs,
    Stats,
    Event,
    Delivery,
)
