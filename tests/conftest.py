"""Shared fixtures: personas, rooms and WebSocket connections.

Personas: `alice` owns the public room `general`, `bob` is a member of it,
`carol` (the outsider) belongs to no room.
"""

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chatproject.asgi import application
from rooms.actions import create_room, join_room
from rooms.models import Room

ORIGIN = b"http://localhost"


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
