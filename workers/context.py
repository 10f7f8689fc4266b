"""What tasks need (settings, database, upstream client), built once per worker process."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import datetime

import requests
from celery import current_app
from celery.signals import worker_process_init

from webhook_app.archive.storage import Storage
from webhook_app.depositphotos.client import DepositphotosClient, Pacer
from webhook_app.extensions import build_services, settle
from webhook_app.infra.db import Database
from webhook_app.infra.queue import Enqueuer, broker_tls
from webhook_app.models import utcnow
from webhook_app.services.pace import make_pacer
from webhook_app.services.upstream_sessions import DatabaseSessionStore, session_key
from webhook_app.settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    client: DepositphotosClient
    enqueuer: Enqueuer
    storage: Storage
    # The deployment's shared pace of upstream calls (the client takes its slots).
    pacer: Pacer
    # For downloads and notifications, never for the upstream API (its client has its own).
    http: requests.Session

    def now(self) -> datetime:
        return utcnow()


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        settings = settle()
        shared = build_services(settings, enqueuer=Enqueuer(current_app), pool_size=2)
        pacer = make_pacer(
            shared.db,
            rate=settings.upstream_rate_limit,
            broker_url=settings.broker_url,
            queue=settings.queue,
            tls=broker_tls(settings),
        )
        client = DepositphotosClient(
            base_url=settings.dp_api_url,
            api_key=settings.dp_api_key,
            login_user=settings.dp_login_user,
            login_password=settings.dp_login_password,
            sessions=DatabaseSessionStore(
                shared.db,
                session_key(
                    settings.dp_api_key, settings.dp_login_user, settings.dp_login_password
                ),
            ),
            timeout=settings.upstream_timeout,
            session_max_age=settings.upstream_session_max_age,
            pacer=pacer,
            rate_limited_pause=settings.rate_limited_pause,
        )
        _context = WorkerContext(
            settings,
            shared.db,
            client,
            shared.enqueuer,
            shared.storage,
            pacer,
            requests.Session(),
        )
    return _context


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    # Connections must not be shared with the parent process across fork().
    global _context
    _context = None
    # A platform stops a dyno by sending SIGTERM to every process in it, pool children
    # included: they would die mid-task (a claimed submission left unanswered). The main
    # process's warm shutdown lets the task finish, then ends the child itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
