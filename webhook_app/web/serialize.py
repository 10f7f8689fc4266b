"""The answers of `webhook_app.shapes` built from jobs, items, deliveries and events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, cast, overload

from webhook_app import shapes
from webhook_app.models import Delivery, Event
from webhook_app.services.archive import ARCHIVED, image_path
from webhook_app.services.views import ArchiveView, ItemView, JobView


@overload
def _time(value: datetime) -> str: ...
@overload
def _time(value: datetime | None) -> str | None: ...
def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# Part of every job's ETag: a change to the shape below makes every cached answer stale.
SHAPE = 1


def job_etag(version: int) -> str:
    """A job answer's entity tag (unquoted): its version, never a hash of the body."""
    return f"{version}.{SHAPE}"


def job_json(job: JobView) -> shapes.Job:
    base = f"/api/v1/jobs/{job.public_id}"
    return {
        "id": job.public_id,
        "version": job.version,
        "kind": job.kind,
        "status": job.status,
        "prompt": job.prompt,
        "aspect_ratio": job.aspect_ratio,
        "medium": job.medium,
        "metadata": job.meta,
        "idempotency_key": job.idempotency_key,
        "generation_uuid": job.generation_uuid,
        "upstream_status": job.upstream_status,
        "purchase_status": job.purchase_status,
        "submission": job.submission,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "retry_of": job.retry_of,
        "items": [item_json(item, job.public_id) for item in job.items],
        "results_archived": results_archived(job),
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "submitted_at": _time(job.submitted_at),
        "finished_at": _time(job.finished_at),
        "deadline_at": _time(job.deadline_at),
        "links": {"self": base, "events": f"{base}/events", "deliveries": f"{base}/deliveries"},
    }


def item_json(item: ItemView, job_public_id: str) -> shapes.Item:
    archive = archive_json(item.archive, image_path(job_public_id, item.uuid))
    return {
        "uuid": item.uuid,
        "dp_item_id": item.dp_item_id,
        "preview_url": item.preview_url,
        "width": item.width,
        "height": item.height,
        "type": item.media_type,
        "image_url": image_url(item, archive),
        "archive": archive,
    }


def image_url(item: ItemView, archive: shapes.Archive | None) -> str | None:
    """Our copy once it is kept; until then the upstream's temporary one."""
    return archive["url"] if archive and archive["state"] == ARCHIVED else item.preview_url


def results_archived(job: JobView) -> bool:
    """Every result of the job is in our own store."""
    return bool(job.items) and all(
        item.archive is not None and item.archive.state == ARCHIVED for item in job.items
    )


def archive_json(archive: ArchiveView | None, url: str) -> shapes.Archive | None:
    if archive is None:
        return None
    return {
        "state": archive.state,
        "url": url,
        "sha256": archive.sha256,
        "size": archive.size,
        "content_type": archive.content_type,
        "width": archive.width,
        "height": archive.height,
        "archived_at": _time(archive.archived_at),
        "attempts": archive.attempts,
        "error": archive.last_error,
    }


def delivery_json(delivery: Delivery) -> shapes.Delivery:
    encoding: Literal["utf-8", "hex"]
    try:
        body, encoding = delivery.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = delivery.body.hex(), "hex"
    return {
        "id": delivery.id,
        "received_at": _time(delivery.first_received_at),
        "last_received_at": _time(delivery.last_received_at),
        "received_count": delivery.received_count,
        "outcome": cast(shapes.Outcome, delivery.outcome),
        "detail": delivery.detail,
        "applied_at": _time(delivery.applied_at),
        "content_type": delivery.content_type,
        "headers": delivery.headers,
        "source_addr": delivery.source_addr,
        "body": body,
        "body_encoding": encoding,
    }


def event_json(event: Event) -> shapes.Event:
    return {
        "at": _time(event.at),
        "source": event.source,
        "from": event.from_status,
        "to": event.to_status,
        "detail": event.detail,
    }


def job_page_json(jobs: Sequence[JobView], next_cursor: str | None) -> shapes.JobPage:
    return {"jobs": [job_json(job) for job in jobs], "next_cursor": next_cursor}


def changes_json(jobs: Sequence[JobView], next_cursor: str, more: bool) -> shapes.ChangesPage:
    return {"jobs": [job_json(job) for job in jobs], "next_cursor": next_cursor, "more": more}


def batch_json(jobs: Sequence[JobView], missing: list[str]) -> shapes.BatchJobs:
    return {"jobs": [job_json(job) for job in jobs], "missing": missing}


def stats_json(counts: Mapping[str, int]) -> shapes.Stats:
    """`counts` names every status (zero included)."""
    return {"jobs": cast(dict[shapes.Status, int], counts), "total": sum(counts.values())}
