"""The benchmark kit: the service beside the ceilings of its own stack, measured in one run.

`bench/run` (or `python -m bench`) brings up PostgreSQL + Redis, gunicorn, Celery workers and
the sandbox on loopback, runs every measurement several times and writes bench/RESULTS.md.
"""
