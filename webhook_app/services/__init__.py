"""The plain core: functions that take a session and typed arguments and do one job's work
(create, submit, merge a report, archive, notify, reconcile, report usage).

They never touch Flask's request or Celery; the web edge and the tasks call them. They may
import the root modules, `infra`, `depositphotos` and `archive`.
"""
