"""Build the DATABASES, CACHES and CHANNEL_LAYERS settings from URLs.

Every URL is checked here, at start-up, and a bad one raises
ImproperlyConfigured naming its environment variable, so a typo never
reaches the first request.
"""

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

EMBEDDED_SHARD_COUNT = 2
MYSQL_ENGINE = "django.db.backends.mysql"
# A subclass of Django's MySQL backend that adds the connection checks of
# chatproject.mysql_backend; settings name it as ENGINE for every MySQL URL.
CHAT_MYSQL_ENGINE = "chatproject.mysql_backend"
SQLITE_ENGINE = "django.db.backends.sqlite3"

MYSQL_CHARSET = "utf8mb4"
# Case-insensitive like Django expects of MySQL (iexact, the admin search),
# but accent-sensitive and with a distinct weight for every emoji. The
# older utf8mb4_general_ci and utf8mb4_unicode_ci give all characters
# outside the Basic Multilingual Plane one weight, so "🍕" = "🍔" in a
# unique index. NOTE: this collation needs MariaDB 10.10 or newer; MySQL 8
# has no uca1400 collations (its nearest is utf8mb4_0900_as_ci).
MYSQL_COLLATION = "utf8mb4_uca1400_as_ci"
# Seconds to wait for a TCP connection to a MySQL server: a stopped shard
# then fails a request within this time instead of the client library's
# default of no limit.
MYSQL_CONNECT_TIMEOUT = 5

# Query-string options a MySQL URL may carry, passed to mysqlclient's
# connect(). Anything else is rejected, because mysqlclient would only fail
# on it at the first connection.
MYSQL_INT_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout"})
MYSQL_READ_WRITE_TIMEOUT = 10
MYSQL_STR_OPTIONS = frozenset({"init_command", "unix_socket", "ssl"})
# Letters, digits and underscores need no quoting in the CREATE DATABASE
# statements of the tests and the docs, or in a shell.
DATABASE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,60}$")

REDIS_SCHEMES = ("redis", "rediss", "unix")


def shard_alias(index: int) -> str:
    return f"shard_{index}"


def _sqlite(path: Path, test_path: Path, conn_max_age: int) -> dict:
    return {
        "ENGINE": SQLITE_ENGINE,
        "NAME": str(path),
        # Kept open like MySQL connections: reopening the file and running
        # the PRAGMAs on every consumer hop cost about a third of the CPU of
        # opening a socket. Request threads still close theirs
        # (chatproject.connections).
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            # IMMEDIATE takes the write lock at BEGIN, so two writers wait
            # for each other instead of failing with "database is locked"
            # when both try to upgrade a read lock.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not ":memory:", so a live server in another thread or
        # process sees the same test database.
        "TEST": {"NAME": str(test_path)},
    }


def _init_command(variable: str, extra) -> str:
    """Return the SET statement every new MySQL connection runs.

    A URL may add its own assignments with ?init_command=SET ..., which are
    appended to the required ones, because mysqlclient runs one statement.
    """
    assignments = ["sql_mode='STRICT_TRANS_TABLES'"]
    if extra is not None:
        # A semicolon inside would let a second statement through.
        if (
            not isinstance(extra, str)
            or not re.match(r"^\s*SET\s+\S", extra, re.IGNORECASE)
            or ";" in extra.strip().rstrip(";")
        ):
            raise ImproperlyConfigured(
                f"{variable} has init_command={extra!r}. It must be one SET statement, "
                f"such as init_command=SET SESSION wait_timeout=600."
            )
        assignments.append(re.sub(r"^\s*SET\s+", "", extra, flags=re.IGNORECASE).strip().rstrip(";"))
    return "SET " + ", ".join(assignments)


def _mysql_options(variable: str, url: str, options: dict) -> dict:
    unknown = sorted(set(options) - MYSQL_INT_OPTIONS - MYSQL_STR_OPTIONS)
    if unknown:
        allowed = ", ".join(sorted(MYSQL_INT_OPTIONS | MYSQL_STR_OPTIONS | {"ssl-ca"}))
        raise ImproperlyConfigured(
            f"{variable} has unknown option(s) {', '.join(unknown)} in {_redact(url)}. Allowed options: {allowed}."
        )
    for name in MYSQL_INT_OPTIONS & set(options):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ImproperlyConfigured(f"{variable} has {name}={value!r}. It must be a positive number of seconds.")
    result = dict(options)
    result["init_command"] = _init_command(variable, options.get("init_command"))
    result["charset"] = MYSQL_CHARSET
    # mysqlclient sends SET NAMES utf8mb4 COLLATE ... after connecting;
    # a collation in init_command would be reset by its SET NAMES.
    result["collation"] = MYSQL_COLLATION
    result["isolation_level"] = "read committed"
    result.setdefault("connect_timeout", MYSQL_CONNECT_TIMEOUT)
    # A shard that hangs (rather than refusing connections) must fail a
    # query within seconds, not hold a thread until TCP gives up.
    result.setdefault("read_timeout", MYSQL_READ_WRITE_TIMEOUT)
    result.setdefault("write_timeout", MYSQL_READ_WRITE_TIMEOUT)
    return result


def _redact(url: str) -> str:
    """Return `url` with any password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def mysql_config(variable: str, url: str, conn_max_age: int) -> dict:
    """Return one DATABASES entry for a mysql:// URL; raise naming `variable`."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme != "mysql":
        raise ImproperlyConfigured(
            f"{variable} must be a mysql:// URL such as mysql://user:password@host:3306/name, not {_redact(url)!r}."
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
    except ValueError as error:
        raise ImproperlyConfigured(f"{variable} has an invalid database URL {_redact(url)!r}: {error}") from None
    name = config.get("NAME", "")
    if not DATABASE_NAME_PATTERN.match(name):
        raise ImproperlyConfigured(
            f"{variable} has the invalid database name {name!r} in {_redact(url)}. Use 1 to 60 letters, digits or underscores."
        )
    if not config.get("HOST") and "unix_socket" not in config.get("OPTIONS", {}):
        raise ImproperlyConfigured(f"{variable} has no host in {_redact(url)}.")
    config["ENGINE"] = CHAT_MYSQL_ENGINE
    config["OPTIONS"] = _mysql_options(variable, url, config.get("OPTIONS", {}))
    config["TEST"] = {"NAME": f"test_{name}", "CHARSET": MYSQL_CHARSET, "COLLATION": MYSQL_COLLATION}
    return config


def build_databases(
    data_dir: Path, database_url: str | None, shard_urls: list[str], conn_max_age: int
) -> tuple[dict, list[str]]:
    """Return (DATABASES, shard aliases in order)."""
    if shard_urls and not database_url:
        raise ImproperlyConfigured("DATABASE_URL is required when MESSAGE_SHARD_URLS is set.")
    if database_url and not shard_urls:
        raise ImproperlyConfigured("MESSAGE_SHARD_URLS is required when DATABASE_URL is set.")

    if database_url:
        databases = {"default": mysql_config("DATABASE_URL", database_url, conn_max_age)}
        for index, url in enumerate(shard_urls):
            databases[shard_alias(index)] = mysql_config(f"MESSAGE_SHARD_URLS (item {index + 1})", url, conn_max_age)
    else:
        databases = {"default": _sqlite(data_dir / "main.sqlite3", data_dir / "test-main.sqlite3", conn_max_age)}
        for index in range(EMBEDDED_SHARD_COUNT):
            databases[shard_alias(index)] = _sqlite(
                data_dir / f"shard-{index}.sqlite3", data_dir / f"test-shard-{index}.sqlite3", conn_max_age
            )

    names = [
        (config.get("HOST"), str(config.get("PORT") or ""), config["NAME"]) for config in databases.values()
    ]
    if len(set(names)) != len(names):
        raise ImproperlyConfigured("DATABASE_URL and every MESSAGE_SHARD_URLS entry must name different databases.")

    shards = [alias for alias in databases if alias != "default"]
    return databases, shards


def redis_db_number(url: str) -> int:
    """Return the database number a valid REDIS_URL selects (0 when it names none)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        from urllib.parse import parse_qs

        values = parse_qs(parts.query).get("db", ["0"])
        return int(values[0])
    path = parts.path.lstrip("/")
    return int(path) if path else 0


def check_redis_url(url: str) -> str:
    """Return REDIS_URL unchanged if it is usable; raise naming the variable."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(
            f"REDIS_URL must start with redis://, rediss:// or unix://, not {_redact(url)!r}."
        )
    if parts.scheme != "unix":
        try:
            parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ImproperlyConfigured(f"REDIS_URL has an invalid port in {_redact(url)!r}.") from None
        if not parts.hostname:
            raise ImproperlyConfigured(f"REDIS_URL has no host in {_redact(url)!r}.")
    elif not unquote(parts.path):
        raise ImproperlyConfigured(f"REDIS_URL has no socket path in {_redact(url)!r}.")
    try:
        number = redis_db_number(url)
    except ValueError:
        raise ImproperlyConfigured(f"REDIS_URL names an invalid database number in {_redact(url)!r}.") from None
    if not 0 <= number <= 15:
        raise ImproperlyConfigured(f"REDIS_URL selects database {number}, but Redis has databases 0 to 15 by default.")
    return url


def redis_pool_options(max_connections: int, socket_timeout: float) -> dict:
    """Return redis-py connection-pool options shared by the cache and the channel layer."""
    return {
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5),
        "health_check_interval": 30,
    }


def build_channel_layer(backend: str, url: str, max_connections: int, socket_timeout: float) -> dict:
    """Return the CHANNEL_LAYERS["default"] entry for a Redis layer."""
    host = {"address": url, **redis_pool_options(max_connections, socket_timeout)}
    # Redis pub/sub channel names are shared by all databases of a server,
    # so the database number goes into the prefix: two deployments (or two
    # test runs) on one Redis with different REDIS_URL databases then never
    # hear each other's groups.
    prefix = f"chat.db{redis_db_number(url)}."
    config = {"hosts": [host], "prefix": prefix}
    if backend == "channels_redis.core.RedisChannelLayer":
        # Each socket may queue this many events before new ones are dropped.
        # Clients recover dropped chat events with sync.
        config["capacity"] = 500
        # This layer stores all process-local ("specific.") channels of a
        # process under one key, so their capacity is shared by every socket
        # and the room hub (messaging.fanout) of the process.
        config["channel_capacity"] = {re.compile(r"^specific\."): 10000}
        config["expiry"] = 60
    return {"BACKEND": backend, "CONFIG": config}
