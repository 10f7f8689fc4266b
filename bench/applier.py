"""The worker's applier on its own: `python -m bench.applier`.

The same `workers.applier.Applier` loop a worker runs in a thread of its main process, with
its follow-up tasks sent to the kit's parked queue, so that the callback loads measure what
applying costs (its CPU is its own process's) and nothing the follow-ups would do.
"""

from __future__ import annotations

import signal

from webhook_app.infra.queue import Enqueuer, make_celery
from webhook_app.settings import Settings
from workers.applier import Applier

if __name__ == "__main__":
    settings = Settings.from_env()
    applier = Applier(settings, Enqueuer(make_celery(settings)))
    signal.signal(signal.SIGTERM, lambda *_: applier.stop())
    print("applier ready.", flush=True)
    applier.run()
