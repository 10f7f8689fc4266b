"""Another service on the same broker: it runs the ON_JOB_DONE_TASK and writes what it got."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery

app = Celery("hook_service", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_default_queue=os.environ["HOOK_QUEUE"],
    broker_connection_retry_on_startup=True,
    broker_transport_options={"connect_args": {"timeout": 30}}
    if os.environ["CELERY_BROKER_URL"].startswith("sqla+")
    else {},
)


@app.task(name="tests.on_job_done")
def on_job_done(job_id: str, status: str, items: list[dict[str, Any]]) -> None:
    output = Path(os.environ["HOOK_OUTPUT"]) / f"{job_id}.json"
    output.write_text(json.dumps({"status": status, "items": items}))
