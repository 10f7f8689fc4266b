"""What the upstream told us about a job, in the terms of our own state machine."""

from __future__ import annotations

from dataclasses import dataclass

from webhook_app.states import JobStatus


@dataclass(frozen=True)
class ItemReport:
    uuid: str
    dp_item_id: int | None = None
    preview_url: str | None = None


@dataclass(frozen=True)
class Report:
    """One reading of a job's upstream state, from a callback or a poll.

    `status` is None when the upstream status is one we do not know: the report's items are
    still kept, the job does not move, and the truth is confirmed by polling.
    """

    reference: str
    upstream_status: str | None
    status: JobStatus | None
    purchase_status: str | None = None
    items: tuple[ItemReport, ...] = ()
