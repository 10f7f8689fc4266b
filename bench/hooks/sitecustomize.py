"""Run at start-up by every Python process the kit starts (its PYTHONPATH names this folder).

Installs the round-trip counting of `bench/statement_counts.py` when DB_STATEMENT_COUNTS is set,
so the service's own code carries nothing of the kit.
"""

import os

if os.environ.get("DB_STATEMENT_COUNTS"):
    from bench import statement_counts

    statement_counts.install_from_env()
