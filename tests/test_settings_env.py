"""Settings from the environment: the strict env helpers, build_databases and start-up failures."""

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatproject.databases import build_databases
from chatproject.env import env_bool, env_choice, env_int, env_list, env_str
from tests.conftest import run_django_setup

VARIABLE = "CHAT_TEST_SETTING"


@pytest.fixture
def env(monkeypatch):
    """Return a setter for the test variable and its _FILE twin, both unset at the start."""
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv(f"{VARIABLE}_FILE", raising=False)

    def set_value(value, name=VARIABLE):
        monkeypatch.setenv(name, value)

    return set_value


def raises_naming(call, *args, **kwargs) -> str:
    with pytest.raises(ImproperlyConfigured) as raised:
        call(*args, **kwargs)
    message = str(raised.value)
    assert VARIABLE in message
    return message


# env_str


def test_env_str_unset_and_empty(env):
    assert env_str(VARIABLE) is None
    assert env_str(VARIABLE, "fallback") == "fallback"
    env("")
    assert env_str(VARIABLE, "fallback") == "fallback"


def test_env_str_value_kept_exactly(env):
    env("  spaced value  ")
    assert env_str(VARIABLE) == "  spaced value  "


def test_env_str_from_file(env, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-from-file\n", encoding="utf-8")
    env(str(secret), f"{VARIABLE}_FILE")

    assert env_str(VARIABLE) == "s3cr3t-from-file"


def test_env_str_unreadable_file(env, tmp_path):
    missing = tmp_path / "missing"
    env(str(missing), f"{VARIABLE}_FILE")

    message = raises_naming(env_str, VARIABLE)
    assert f"{VARIABLE}_FILE" in message
    assert str(missing) in message


def test_env_str_file_and_value(env, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from file", encoding="utf-8")
    env("from env")
    env(str(secret), f"{VARIABLE}_FILE")

    message = raises_naming(env_str, VARIABLE)
    assert message == f"Set either {VARIABLE} or {VARIABLE}_FILE, not both."


# env_bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("On", True),
     ("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_env_bool_parses(env, value, expected):
    env(value)
    assert env_bool(VARIABLE, default=not expected) is expected


def test_env_bool_default(env):
    assert env_bool(VARIABLE, default=True) is True
    env("")
    assert env_bool(VARIABLE, default=False) is False


@pytest.mark.parametrize("value", ["maybe", "2", "y", "t", "truee", "-1"])
def test_env_bool_invalid(env, value):
    env(value)
    message = raises_naming(env_bool, VARIABLE, default=False)
    assert message == f"{VARIABLE}={value!r} is not a boolean; use one of true, false, 1, 0, yes, no, on, off."


# env_int


def test_env_int_parses(env):
    assert env_int(VARIABLE, 7) == 7
    assert env_int(VARIABLE, None) is None
    env(" 42 ")
    assert env_int(VARIABLE, 7, minimum=0, maximum=42) == 42
    env("-5")
    assert env_int(VARIABLE, 7) == -5
    env("0")
    assert env_int(VARIABLE, 7, minimum=0) == 0


@pytest.mark.parametrize("value", ["4.2", "ten", "1e3", "0x10", "12abc"])
def test_env_int_invalid(env, value):
    env(value)
    assert raises_naming(env_int, VARIABLE, 3) == f"{VARIABLE}={value!r} is not an integer."


def test_env_int_bounds(env):
    env("9")
    assert raises_naming(env_int, VARIABLE, 1, minimum=10) == f"{VARIABLE}=9 is below the minimum of 10."
    assert raises_naming(env_int, VARIABLE, 1, maximum=8) == f"{VARIABLE}=9 is above the maximum of 8."
    assert env_int(VARIABLE, 1, minimum=9, maximum=9) == 9


# env_list


def test_env_list_parses(env):
    assert env_list(VARIABLE) == []
    assert env_list(VARIABLE, ["a"]) == ["a"]
    env("   ")
    assert env_list(VARIABLE, ["a"]) == ["a"]
    env("one")
    assert env_list(VARIABLE) == ["one"]
    env(" a.example , b.example,c ")
    assert env_list(VARIABLE) == ["a.example", "b.example", "c"]


@pytest.mark.parametrize("value", ["a,,b", "a,", ",a", "a, ,b", ","])
def test_env_list_empty_item(env, value):
    env(value)
    message = raises_naming(env_list, VARIABLE)
    assert message == f"{VARIABLE}={value!r} has an empty item; remove the extra comma."


def test_env_list_default_not_shared(env):
    default = ["a"]
    result = env_list(VARIABLE, default)
    result.append("b")
    assert default == ["a"]


# env_choice


def test_env_choice_parses(env):
    choices = ("DEBUG", "INFO")
    assert env_choice(VARIABLE, "INFO", choices) == "INFO"
    env("DEBUG")
    assert env_choice(VARIABLE, "INFO", choices) == "DEBUG"


@pytest.mark.parametrize("value", ["debug", "TRACE", " DEBUG"])
def test_env_choice_invalid(env, value):
    env(value)
    message = raises_naming(env_choice, VARIABLE, "INFO", ("DEBUG", "INFO"))
    assert message == f"{VARIABLE}={value!r} is not one of: DEBUG, INFO."


# build_databases


def test_build_databases_embedded(tmp_path):
    databases, shards = build_databases(tmp_path, None, [], conn_max_age=60)

    assert shards == ["shard_0", "shard_1"]
    assert list(databases) == ["default", "shard_0", "shard_1"]
    expected_files = {
        "default": ("main.sqlite3", "test-main.sqlite3"),
        "shard_0": ("shard-0.sqlite3", "test-shard-0.sqlite3"),
        "shard_1": ("shard-1.sqlite3", "test-shard-1.sqlite3"),
    }
    for alias, (name, test_name) in expected_files.items():
        config = databases[alias]
        assert config["ENGINE"] == "django.db.backends.sqlite3"
        assert config["NAME"] == str(tmp_path / name)
        assert config["TEST"] == {"NAME": str(tmp_path / test_name)}
        assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]


MYSQL_MAIN = "mysql://chat:pa%40ss@db.internal:3306/chat"
MYSQL_SHARDS = ["mysql://chat:pw@shard0.internal:3306/messages", "mysql://chat:pw@shard1.internal:3307/messages"]


def test_build_databases_mysql(tmp_path):
    databases, shards = build_databases(tmp_path, MYSQL_MAIN, MYSQL_SHARDS, conn_max_age=30)

    assert shards == ["shard_0", "shard_1"]
    main = databases["default"]
    assert (main["NAME"], main["USER"], main["PASSWORD"], main["HOST"], main["PORT"]) == (
        "chat", "chat", "pa@ss", "db.internal", 3306,
    )
    assert (databases["shard_1"]["HOST"], databases["shard_1"]["PORT"]) == ("shard1.internal", 3307)
    for alias in ("default", "shard_0", "shard_1"):
        config = databases[alias]
        assert "mysql" in config["ENGINE"]
        assert config["CONN_MAX_AGE"] == 30
        assert config["CONN_HEALTH_CHECKS"] is True
        assert config["OPTIONS"]["charset"] == "utf8mb4"
        assert config["OPTIONS"]["isolation_level"] == "read committed"
        assert "STRICT_TRANS_TABLES" in config["OPTIONS"]["init_command"]
        assert config["TEST"]["NAME"] == f"test_{config['NAME']}"
        assert config["TEST"]["CHARSET"] == "utf8mb4"
        assert config["TEST"]["COLLATION"].startswith("utf8mb4_")


def test_database_url_needs_shard_urls(tmp_path):
    with pytest.raises(ImproperlyConfigured) as raised:
        build_databases(tmp_path, MYSQL_MAIN, [], conn_max_age=60)
    assert "MESSAGE_SHARD_URLS" in str(raised.value)


@pytest.mark.parametrize(
    "shard_urls",
    [
        [MYSQL_MAIN],
        [MYSQL_SHARDS[0], MYSQL_SHARDS[0]],
        [MYSQL_SHARDS[0], "mysql://other:secret@shard0.internal:3306/messages"],
    ],
    ids=["shard-is-main", "same-shard-twice", "same-database-other-user"],
)
def test_duplicate_databases_rejected(tmp_path, shard_urls):
    with pytest.raises(ImproperlyConfigured) as raised:
        build_databases(tmp_path, MYSQL_MAIN, shard_urls, conn_max_age=60)
    assert "must name different databases" in str(raised.value)


def test_same_name_on_other_hosts_accepted(tmp_path):
    databases, shards = build_databases(tmp_path, MYSQL_MAIN, MYSQL_SHARDS, conn_max_age=60)
    assert databases["shard_0"]["NAME"] == databases["shard_1"]["NAME"] == "messages"
    assert len(shards) == 2


# Start-up failures, each in a fresh process


def setup_failures(tmp_path: Path, cases: dict[str, dict]) -> dict[str, tuple[int, str]]:
    """Run django.setup() once per case in parallel and return {case: (exit code, stderr)}."""
    processes = {
        name: run_django_setup({"CHAT_DATA_DIR": str(tmp_path / name), **variables})
        for name, variables in cases.items()
    }
    results = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=90)
        results[name] = (process.returncode, stderr)
    return results


SECRET = "k" * 40


def test_settings_import_failures_name_variable(tmp_path):
    cases = {
        "DJANGO_DEBUG": {"DJANGO_DEBUG": "maybe"},
        "MESSAGE_BUCKETS": {"MESSAGE_BUCKETS": "0"},
        "DATABASE_CONN_MAX_AGE": {"DATABASE_CONN_MAX_AGE": "-1"},
        "DJANGO_SESSION_COOKIE_AGE": {"DJANGO_SESSION_COOKIE_AGE": "1 day"},
        "DJANGO_ALLOWED_HOSTS": {"DJANGO_ALLOWED_HOSTS": "localhost,,example.com"},
        "DJANGO_ALLOWED_HOSTS with a URL": {"DJANGO_ALLOWED_HOSTS": "http://127.0.0.1:8000"},
        "DJANGO_CSRF_TRUSTED_ORIGINS": {"DJANGO_CSRF_TRUSTED_ORIGINS": "chat.example.com"},
        "CHAT_DB_THREADS": {"CHAT_DB_THREADS": "0"},
        "LOG_LEVEL": {"LOG_LEVEL": "TRACE"},
        "DJANGO_SECRET_KEY": {"DJANGO_SECRET_KEY": "short"},
        "DJANGO_SECRET_KEY_FILE": {"DJANGO_SECRET_KEY": SECRET, "DJANGO_SECRET_KEY_FILE": "/nonexistent/key"},
        "MESSAGE_SHARD_URLS": {
            "DATABASE_URL": MYSQL_MAIN, "DJANGO_SECRET_KEY": SECRET, "DJANGO_ALLOWED_HOSTS": "chat.example",
        },
        "CHANNEL_LAYER_BACKEND": {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CHANNEL_LAYER_BACKEND": "channels.layers.InMemoryChannelLayer",
            "DJANGO_SECRET_KEY": SECRET,
            "DJANGO_ALLOWED_HOSTS": "chat.example",
        },
    }
    cases["secret required"] = {"REDIS_URL": "redis://127.0.0.1:6379/0", "DJANGO_ALLOWED_HOSTS": "chat.example"}

    results = setup_failures(tmp_path, cases)

    for name, (exit_code, stderr) in results.items():
        variable = "DJANGO_SECRET_KEY" if name == "secret required" else name.split(" ")[0]
        assert exit_code == 1, (name, stderr[-1500:])
        assert "django.core.exceptions.ImproperlyConfigured" in stderr, (name, stderr[-1500:])
        last_line = stderr.strip().splitlines()[-1]
        assert variable in last_line, (name, last_line)


def test_settings_import_defaults_succeed(tmp_path):
    code = (
        "from django.conf import settings\n"
        "print(settings.DEBUG, settings.MESSAGE_SHARDS, settings.MESSAGE_BUCKETS, settings.CHAT_WORKER_ID)\n"
        "print(settings.DATABASES['shard_1']['TEST']['NAME'])\n"
    )
    process = run_django_setup({"CHAT_DATA_DIR": str(tmp_path)}, code)
    stdout, stderr = process.communicate(timeout=90)

    assert process.returncode == 0, stderr[-1500:]
    assert stdout.splitlines() == [
        "True ['shard_0', 'shard_1'] 1024 None",
        str(tmp_path / "test-shard-1.sqlite3"),
    ]
    assert (tmp_path / "dev-secret-key").stat().st_mode & 0o777 == 0o600
