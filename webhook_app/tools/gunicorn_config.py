"""gunicorn settings read by `webhook-app serve` (`--config python:<this module>`).

Garbage collection: a request that builds a page of jobs allocates thousands of objects, and
with the default thresholds the collector runs every few hundred allocations, now and then
walking every object of the process (the framework, SQLAlchemy's mappers, the app) while all
threads wait: the slowest requests were the ones a full collection landed in. What exists
once the app is loaded lives as long as the worker, so it is frozen out of collections, and
the young generation is collected less often.
"""

from __future__ import annotations

import gc
from typing import Any

GC_THRESHOLDS = (20_000, 50, 100)


def post_worker_init(worker: Any) -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
