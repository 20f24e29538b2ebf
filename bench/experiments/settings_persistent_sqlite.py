"""The project's settings with persistent SQLite connections (CONN_MAX_AGE) in the embedded default.

Without CONN_MAX_AGE, Django closes the connection at the end of every
database_sync_to_async call, so each hop reopens the SQLite file and runs
its PRAGMA init_command again.
"""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import DATABASES, EMBEDDED

if EMBEDDED:
    for config in DATABASES.values():
        config["CONN_MAX_AGE"] = 600
        config["CONN_HEALTH_CHECKS"] = True
