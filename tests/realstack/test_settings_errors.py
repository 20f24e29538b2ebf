"""Bad database and Redis settings stop a process at start-up, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realstack

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
GOOD = {
    "DATABASE_URL": "mysql://root@127.0.0.1:3306/chat_main",
    "MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1:3306/chat_shard0,mysql://root@127.0.0.1:3306/chat_shard1",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "DJANGO_SECRET_KEY": "settings-error-test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "DJANGO_ALLOWED_HOSTS": "localhost",
}


def start_django(env: dict, tmp_path) -> subprocess.CompletedProcess:
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "DATABASE_", "MESSAGE_", "REDIS_", "CHAT_", "CHANNEL_"))
    }
    clean.update({"DJANGO_SETTINGS_MODULE": "chatproject.settings", "CHAT_DATA_DIR": str(tmp_path), **env})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(sorted(settings.DATABASES))"],
        cwd=PROJECT_ROOT,
        env={name: value for name, value in clean.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"DATABASE_URL": "postgres://root@127.0.0.1/chat_main"}, "DATABASE_URL must be a mysql:// URL"),
        ({"DATABASE_URL": "mysql://root@127.0.0.1:3306/"}, "DATABASE_URL has the invalid database name ''"),
        ({"DATABASE_URL": "mysql://root@127.0.0.1:33x6/chat_main"}, "DATABASE_URL has an invalid database URL"),
        ({"DATABASE_URL": "mysql://root:hunter2@127.0.0.1/chat-main"}, "mysql://root:***@127.0.0.1/chat-main"),
        ({"DATABASE_URL": None}, "DATABASE_URL is required when MESSAGE_SHARD_URLS is set"),
        ({"MESSAGE_SHARD_URLS": None}, "MESSAGE_SHARD_URLS is required when DATABASE_URL is set"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1/a,,mysql://root@127.0.0.1/b"}, "MESSAGE_SHARD_URLS='"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1/a,redis://127.0.0.1/1"}, "MESSAGE_SHARD_URLS (item 2) must be a mysql:// URL"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1/a?pool=5"}, "MESSAGE_SHARD_URLS (item 1) has unknown option(s) pool"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1/a?init_command=DROP+TABLE+x"}, "must be one SET statement"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1/a?connect_timeout=0"}, "connect_timeout=0"),
        ({"MESSAGE_SHARD_URLS": "mysql://root@127.0.0.1:3306/chat_main"}, "must name different databases"),
        ({"REDIS_URL": "http://127.0.0.1:6379/1"}, "REDIS_URL must start with redis://"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/16"}, "REDIS_URL selects database 16"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/one"}, "REDIS_URL names an invalid database number"),
        ({"REDIS_URL": "redis://127.0.0.1:port/1"}, "REDIS_URL has an invalid port"),
        ({"CHANNEL_LAYER_BACKEND": "channels.layers.InMemoryChannelLayer"}, "CHANNEL_LAYER_BACKEND="),
        ({"REDIS_MAX_CONNECTIONS": "many"}, "REDIS_MAX_CONNECTIONS='many' is not an integer"),
        ({"REDIS_SOCKET_TIMEOUT": "5"}, "REDIS_SOCKET_TIMEOUT=5 is below the minimum of 6"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else None,
)
def test_bad_setting_named(changes, expected, tmp_path):
    result = start_django({**GOOD, **changes}, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert expected in result.stderr
    assert "hunter2" not in result.stderr


def test_good_settings_start(tmp_path):
    result = start_django(GOOD, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['default', 'shard_0', 'shard_1']"


def test_no_urls_embedded(tmp_path):
    result = start_django({name: None for name in GOOD}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dev-secret-key").exists()
