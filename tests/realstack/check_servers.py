"""Exit 0 when MariaDB and Redis for the second test pass answer, 77 to skip it.

Reads DATABASE_URL, MESSAGE_SHARD_URLS and REDIS_URL as the tests will.
Under CI=true an unreachable server is a failure (exit 1), so CI cannot
pass without the MariaDB and Redis tests. With --flush-redis it also
empties the Redis database REDIS_URL selects (never the whole server), so
cached sessions and lookups from an earlier run cannot leak into this one.
"""

import importlib.util
import os
import socket
import sys
from urllib.parse import urlsplit

SKIP = 77


def reachable(url: str, default_port: int) -> str | None:
    """Return None if a TCP connection to the URL's host and port opens, else the error."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=3):
            return None
    except OSError as error:
        return f"{parts.hostname}:{parts.port or default_port}: {error.strerror or error}"


def problems() -> list[str]:
    found = []
    urls = {name: os.environ.get(name, "") for name in ("DATABASE_URL", "MESSAGE_SHARD_URLS", "REDIS_URL")}
    for name, value in urls.items():
        if not value:
            found.append(f"{name} is not set")
    if found:
        return found
    for url in [urls["DATABASE_URL"], *urls["MESSAGE_SHARD_URLS"].split(",")]:
        error = reachable(url, 3306)
        if error:
            found.append(f"MariaDB does not answer at {error}")
    error = reachable(urls["REDIS_URL"], 6379)
    if error:
        found.append(f"Redis does not answer at {error}")
    if importlib.util.find_spec("MySQLdb") is None:
        found.append("mysqlclient is not installed (apt-get install default-libmysqlclient-dev pkg-config, then make install)")
    if not found:
        found.extend(login_problems(urls["DATABASE_URL"]))
    return found


def login_problems(url: str) -> list[str]:
    import MySQLdb

    parts = urlsplit(url)
    try:
        connection = MySQLdb.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username or "", password=parts.password or "",
            connect_timeout=5,
        )
    except MySQLdb.Error as error:
        hint = ""
        if error.args and error.args[0] == 1698:
            hint = " (root may log in only over the unix socket; see docs/deployment.md, running the MySQL tests)"
        return [f"logging in to MariaDB as {parts.username!r} failed: {error}{hint}"]
    connection.close()
    return []


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    client.flushdb()
    client.close()


def main() -> int:
    found = problems()
    if not found:
        if "--flush-redis" in sys.argv[1:]:
            flush_redis(os.environ["REDIS_URL"])
        return 0
    message = "; ".join(found)
    if os.environ.get("CI") == "true":
        print(f"The MariaDB and Redis tests cannot run and CI=true: {message}.", file=sys.stderr)
        return 1
    print(f"Skipping the MariaDB and Redis tests: {message}.")
    return SKIP


if __name__ == "__main__":
    sys.exit(main())
