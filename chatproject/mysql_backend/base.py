"""Django's MySQL backend with connection checks for long-lived ASGI processes.

Settings name this package as ENGINE for every mysql:// URL
(chatproject.databases). Idle connections need nothing here: with
CONN_HEALTH_CHECKS, which every MySQL URL sets, Django pings a reused
connection before the first cursor or transaction of each request or
consumer call. After an idle spell longer than the server's wait_timeout
the ping fails and Django reconnects. This backend adds two things:

- The first connection to each alias checks that the database's character
  set is utf8mb4, so a database created with another one fails loudly
  instead of mangling emoji.

Connections opened by HTTP request threads are closed when the request
ends, for every backend (chatproject.connections).
"""

import logging
import threading

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.mysql import base as mysql_base

logger = logging.getLogger(__name__)

REQUIRED_CHARSET = "utf8mb4"

_checked_aliases: set[str] = set()
_checked_lock = threading.Lock()


class DatabaseWrapper(mysql_base.DatabaseWrapper):
    def init_connection_state(self):
        super().init_connection_state()
        if self.settings_dict["NAME"] and self.alias not in _checked_aliases:
            self._check_charset()

    def _check_charset(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT @@character_set_database, @@collation_database, @@character_set_connection")
            database_charset, database_collation, connection_charset = cursor.fetchone()
        if database_charset != REQUIRED_CHARSET or connection_charset != REQUIRED_CHARSET:
            raise ImproperlyConfigured(
                f"Database {self.settings_dict['NAME']!r} (alias {self.alias}) uses character set "
                f"{database_charset!r} on a {connection_charset!r} connection; it must be {REQUIRED_CHARSET}. "
                f"Run: ALTER DATABASE `{self.settings_dict['NAME']}` CHARACTER SET utf8mb4 "
                f"COLLATE {self.settings_dict['OPTIONS'].get('collation')};"
            )
        expected_collation = self.settings_dict["OPTIONS"].get("collation")
        if expected_collation and database_collation != expected_collation:
            logger.warning(
                "Database %r (alias %s) has collation %s, not %s; new tables use %s, so uniqueness "
                "and comparisons of text may differ from the documented behaviour",
                self.settings_dict["NAME"],
                self.alias,
                database_collation,
                expected_collation,
                database_collation,
            )
        with _checked_lock:
            _checked_aliases.add(self.alias)
