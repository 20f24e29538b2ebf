"""Build the DATABASES setting: the main database plus the message shards."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

EMBEDDED_SHARD_COUNT = 2
MYSQL_ENGINE = "django.db.backends.mysql"
SQLITE_ENGINE = "django.db.backends.sqlite3"


def shard_alias(index: int) -> str:
    return f"shard_{index}"


def _sqlite(path: Path, test_path: Path) -> dict:
    return {
        "ENGINE": SQLITE_ENGINE,
        "NAME": str(path),
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


def _from_url(variable: str, url: str, conn_max_age: int) -> dict:
    try:
        config = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
    except ValueError as error:
        raise ImproperlyConfigured(f"{variable} has an invalid database URL: {error}") from None
    if config["ENGINE"] == MYSQL_ENGINE:
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].setdefault("charset", "utf8mb4")
        config["OPTIONS"].setdefault("isolation_level", "read committed")
        config["OPTIONS"].setdefault(
            "init_command", "SET sql_mode='STRICT_TRANS_TABLES', collation_connection='utf8mb4_unicode_ci'"
        )
        config["TEST"] = {
            "NAME": f"test_{config['NAME']}",
            "CHARSET": "utf8mb4",
            "COLLATION": "utf8mb4_unicode_ci",
        }
    return config


def build_databases(
    data_dir: Path, database_url: str | None, shard_urls: list[str], conn_max_age: int
) -> tuple[dict, list[str]]:
    """Return (DATABASES, shard aliases in order)."""
    if database_url:
        databases = {"default": _from_url("DATABASE_URL", database_url, conn_max_age)}
    else:
        databases = {"default": _sqlite(data_dir / "main.sqlite3", data_dir / "test-main.sqlite3")}

    if shard_urls:
        for index, url in enumerate(shard_urls):
            databases[shard_alias(index)] = _from_url("MESSAGE_SHARD_URLS", url, conn_max_age)
    elif database_url:
        raise ImproperlyConfigured("MESSAGE_SHARD_URLS is required when DATABASE_URL is set.")
    else:
        for index in range(EMBEDDED_SHARD_COUNT):
            databases[shard_alias(index)] = _sqlite(
                data_dir / f"shard-{index}.sqlite3", data_dir / f"test-shard-{index}.sqlite3"
            )

    names = [(config["ENGINE"], config.get("HOST"), config.get("PORT"), config["NAME"]) for config in databases.values()]
    if len(set(names)) != len(names):
        raise ImproperlyConfigured("DATABASE_URL and every MESSAGE_SHARD_URLS entry must name different databases.")

    shards = [alias for alias in databases if alias != "default"]
    return databases, shards
