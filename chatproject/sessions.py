"""Session engine: cached_db sessions that survive a Redis outage.

Django's cached_db engine keeps every session in the database and a copy
in the cache, but a cache that raises (Redis down or restarting) turns
every request into an HTTP 500. Here a failing cache is skipped: reads go
to the database, and writes and deletions reach the database while the
cache copy is dropped. A deleted session's stale cache copy could outlive
an outage, so the socket checks (messaging.socket_checks) read the table.
"""

import logging
import time

from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore

logger = logging.getLogger(__name__)

# Log a failing cache at most once per this many seconds per process.
WARNING_INTERVAL_SECONDS = 30
_last_warning = 0.0


def _warn(operation: str, error: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARNING_INTERVAL_SECONDS:
        _last_warning = now
        logger.warning("Session cache %s failed (%s); using the database alone", operation, error)


class _TolerantCache:
    """Proxy for the session cache whose failures count as misses."""

    def __init__(self, cache):
        self._cache = cache

    def get(self, key, default=None):
        try:
            return self._cache.get(key, default)
        except Exception as error:
            _warn("get", error)
            return default

    def set(self, key, value, timeout=None):
        try:
            self._cache.set(key, value, timeout)
        except Exception as error:
            _warn("set", error)

    def delete(self, key):
        try:
            self._cache.delete(key)
        except Exception as error:
            _warn("delete", error)

    def __contains__(self, key):
        try:
            return key in self._cache
        except Exception as error:
            _warn("lookup", error)
            return False

    async def aget(self, key, default=None):
        try:
            return await self._cache.aget(key, default)
        except Exception as error:
            _warn("get", error)
            return default

    async def aset(self, key, value, timeout=None):
        try:
            await self._cache.aset(key, value, timeout)
        except Exception as error:
            _warn("set", error)

    async def adelete(self, key):
        try:
            await self._cache.adelete(key)
        except Exception as error:
            _warn("delete", error)


class SessionStore(CachedDBStore):
    def __init__(self, session_key=None):
        super().__init__(session_key)
        self._cache = _TolerantCache(self._cache)
