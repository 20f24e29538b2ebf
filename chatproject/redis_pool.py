"""One Redis connection pool per process for Django's cache.

Django keeps cache objects in asgiref's Local, which follows the asyncio
context: every WebSocket consumer (and every HTTP request under ASGI) gets
its own RedisCache, each with a pool of its own. Measured on one daphne
process, 1000 open sockets held 1000 Redis connections just for session
reads. Naming SharedConnectionPool as the cache's pool_class makes all of
them share one pool, bounded by its max_connections.
"""

import os
import threading

import redis

_pools: dict[tuple, redis.ConnectionPool] = {}
_lock = threading.Lock()


class SharedConnectionPool(redis.ConnectionPool):
    @classmethod
    def from_url(cls, url, **kwargs):
        # The pid is part of the key, so a forked child builds its own pool
        # instead of sharing sockets with its parent.
        key = (os.getpid(), url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **kwargs)
            return pool
