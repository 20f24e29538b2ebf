"""Fixtures for the tests that need MariaDB and Redis.

They run in make test's second pass, where DATABASE_URL,
MESSAGE_SHARD_URLS and REDIS_URL are set. On the embedded default every
test here is skipped before its fixtures run.
"""

import resource

import pytest
from django.conf import settings

from chatproject.databases import CHAT_MYSQL_ENGINE


def real_stack_configured() -> bool:
    return (
        settings.DATABASES["default"]["ENGINE"] == CHAT_MYSQL_ENGINE
        and len(settings.MESSAGE_SHARDS) >= 2
        and bool(settings.REDIS_URL)
    )


def pytest_runtest_setup(item):
    if not real_stack_configured():
        pytest.skip("needs MariaDB with two shards and Redis: set DATABASE_URL, MESSAGE_SHARD_URLS and REDIS_URL")


@pytest.fixture
def servers(tmp_path):
    """Start daphne processes with start(**env); all are stopped by PID when the test ends."""
    from tests.realstack.stack import start_server

    started = []

    class Servers:
        def start(self, **env):
            server = start_server(tmp_path / f"server-{len(started)}", **env)
            started.append(server)
            return server

    yield Servers()
    for server in started:
        server.stop()


@pytest.fixture
def many_files():
    """Raise this process's open-file limit (its children inherit it) for a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if limit < 4096:
        pytest.skip(f"the hard open-file limit is {hard}; a thousand sockets need about 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
