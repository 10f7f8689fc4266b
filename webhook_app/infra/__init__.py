"""Infrastructure every process shares: database engines and sessions, the Celery app and
its broker, logging and redaction, metrics, migrations, tokens and signatures.

Imports nothing of the service above it (no `services`, `web`, `workers` or `tools`)."""
