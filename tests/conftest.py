"""Shared fixtures: personas, rooms and WebSocket connections.

Personas: `alice` owns the public room `general`, `bob` is a member of it,
`carol` (the outsider) belongs to no room.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chatproject.asgi import application
from rooms.actions import create_room, join_room
from rooms.models import Room

ORIGIN = b"http://localhost"


@pytest.fixture(autouse=True)
def empty_cache():
    """Start every test with an empty cache: rolled-back tests reuse ids."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def make_user(django_user_model):
    def make(username, **fields):
        fields.setdefault("display_name", username.title())
        return django_user_model.objects.create_user(username=username, password="pw-" + username * 3, **fields)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def general(alice, bob):
    room = create_room(alice, "general", Room.Kind.PUBLIC, "Everything")
    join_room(bob, room.pk)
    return room


def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def open_socket(user=None, origin=ORIGIN, session_key=None, expect_hello=True):
    """Open /ws/ as `user` through the real ASGI stack; return (communicator, hello)."""
    from channels.db import database_sync_to_async

    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    if user is not None or session_key is not None:
        key = session_key or await database_sync_to_async(session_cookie_for)(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/", headers=headers)
    connected, _ = await communicator.connect()
    if not connected:
        return communicator, None
    hello = await communicator.receive_json_from(timeout=5) if expect_hello else None
    return communicator, hello


@pytest.fixture
def fast_password_hasher(settings):
    """Hash passwords with MD5 instead of PBKDF2, which spends a large part of a second on each user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def stored_messages(**filters) -> list:
    """Return the messages on every shard matching `filters`, ordered by room and seq."""
    from messaging.models import Message

    rows = []
    for alias in settings.MESSAGE_SHARDS:
        rows.extend(Message.objects.using(alias).filter(**filters))
    return sorted(rows, key=lambda message: (message.room_id, message.seq))


async def receive_frame(communicator, timeout=5) -> dict:
    """Receive one text frame, check that it is valid UTF-8 and return it decoded."""
    text = await communicator.receive_from(timeout=timeout)
    assert isinstance(text, str), f"expected a text frame, got {text!r}"
    # A WebSocket text frame must be UTF-8, so a lone surrogate here would
    # make a real server fail to send it.
    text.encode("utf-8")
    return json.loads(text)


class SocketPool:
    """Sockets opened through open_socket, all disconnected when the test ends."""

    def __init__(self):
        self.opened = []

    async def open(self, user=None, **options):
        communicator, hello = await open_socket(user, **options)
        self.opened.append(communicator)
        return communicator, hello

    async def close_all(self):
        for communicator in self.opened:
            try:
                await communicator.disconnect()
            except Exception:  # noqa: BLE001  (a socket that crashed already failed its test)
                pass


@pytest.fixture
async def sockets():
    pool = SocketPool()
    yield pool
    await pool.close_all()


def run_django_setup(env: dict, code: str = ""):
    """Start `python -c` that runs django.setup() and then `code`, with only `env` changed.

    Return the subprocess.Popen, which the caller collects with communicate().
    Variables the project reads are removed first, so the developer's own
    environment cannot change the outcome.
    """
    project_root = Path(__file__).resolve().parent.parent
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "DATABASE_", "MESSAGE_", "REDIS_", "CHAT_", "CHANNEL_", "CORS_", "LOG_"))
    }
    clean["DJANGO_SETTINGS_MODULE"] = "chatproject.settings"
    clean.update(env)
    script = "import django\ndjango.setup()\n" + code
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=project_root,
        env=clean,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
