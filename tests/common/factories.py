"""Small builders for tests: jobs in the database and upstream answers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from webhook_app.models import Job
from webhook_app.services.jobs import JobRequest, create_job

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_job(session: Session, prompt: str = "a lighthouse at dawn", **kwargs: Any) -> Job:
    job, _ = create_job(
        session,
        JobRequest(prompt=prompt),
        now=kwargs.pop("now", T0),
        deadline=kwargs.pop("deadline", timedelta(hours=1)),
        **kwargs,
    )
    return job


def generation(
    stage: str, reference: str | None = None, items: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """The `data` of a generation at a stage: new, preview or final."""
    reference = reference or str(uuid.uuid4())
    items = items or [str(uuid.uuid4()) for _ in range(4)]
    status, purchase = {
        "new": ("new", "deferred"),
        "preview": ("processing", "deferred"),
        "final": ("completed", "paid"),
    }[stage]
    data = {
        "uuid": reference,
        "prompt": "a lighthouse at dawn",
        "status": status,
        "purchaseStatus": purchase,
        "items": [
            {
                "uuid": item,
                "dpItemId": 900000 + n if stage == "final" else None,
                "previewUrl": f"https://example.test/{item}.png" if stage != "new" else None,
            }
            for n, item in enumerate(items)
        ],
    }
    data.update(extra)
    return data


def envelope(data: dict[str, Any]) -> bytes:
    return json.dumps(
        {"timestamp": "2026-01-01 12:00:00", "version": "1.3", "type": "success", "data": data}
    ).encode()
