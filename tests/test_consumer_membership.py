"""Open sockets follow membership, logout and account changes, and repair missed events."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client

from messaging import consumers
from messaging.actions import send_message
from messaging.consumers import CLOSE_DEACTIVATED, CLOSE_LOGGED_OUT
from rooms.actions import add_member, create_room, join_room, leave_room, open_direct_room, remove_member
from rooms.models import Membership, Room
from tests.conftest import receive_frame, session_cookie_for, stored_messages

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("fast_password_hasher"),
]

# Seconds to wait for an event that arrives through the channel layer or
# the revalidation loop.
EVENT_TIMEOUT = 5


def db(function):
    return database_sync_to_async(function)


async def send_as(user, room_id: int, body: str, client_id: str) -> dict:
    return (await db(send_message)(user, room_id, body, client_id)).message


async def expect_new(communicator, message: dict) -> None:
    assert await receive_frame(communicator) == {"type": "message.new", "message": message}


async def expect_close(communicator, code: int) -> None:
    output = await communicator.receive_output(timeout=EVENT_TIMEOUT)
    assert output == {"type": "websocket.close", "code": code}


def summary(room: Room, role: str, last_seq: int = 0) -> dict:
    return {"id": room.pk, "name": room.name, "kind": room.kind, "topic": room.topic, "role": role, "last_seq": last_seq}


# Joining


async def test_join_delivers_room(alice, carol, general, sockets):
    await send_as(alice, general.pk, "before carol", "m1")
    socket, hello = await sockets.open(carol)
    assert hello["rooms"] == []

    await db(join_room)(carol, general.pk)

    assert await receive_frame(socket) == {"type": "room.joined", "room": summary(general, "member", last_seq=1)}
    message = await send_as(alice, general.pk, "welcome", "m2")
    await expect_new(socket, message)
    assert await socket.receive_nothing()


async def test_join_twice_one_event(alice, carol, general, sockets):
    socket, _ = await sockets.open(carol)
    await db(join_room)(carol, general.pk)
    assert (await receive_frame(socket))["type"] == "room.joined"

    await db(join_room)(carol, general.pk)

    assert await socket.receive_nothing(timeout=0.3)


async def test_join_reaches_every_socket(alice, carol, general, sockets):
    first, _ = await sockets.open(carol)
    second, _ = await sockets.open(carol)
    bystander, _ = await sockets.open(alice)

    await db(join_room)(carol, general.pk)

    for socket in (first, second):
        assert await receive_frame(socket) == {"type": "room.joined", "room": summary(general, "member")}
    assert await bystander.receive_nothing()


async def test_added_to_private_room(alice, bob, general, sockets):
    secret = await db(create_room)(alice, "secret", Room.Kind.PRIVATE)
    socket, _ = await sockets.open(bob)

    await db(add_member)(alice, secret.pk, "bob", Membership.Role.ADMIN)

    assert await receive_frame(socket) == {"type": "room.joined", "room": summary(secret, "admin")}
    message = await send_as(alice, secret.pk, "psst", "p1")
    await expect_new(socket, message)


async def test_created_room_joined(alice, sockets):
    socket, _ = await sockets.open(alice)

    room = await db(create_room)(alice, "fresh", Room.Kind.PUBLIC, "New")

    assert await receive_frame(socket) == {"type": "room.joined", "room": summary(room, "owner")}


async def test_direct_room_joined_both(alice, bob, sockets):
    alice_socket, _ = await sockets.open(alice)
    bob_socket, _ = await sockets.open(bob)

    direct = await db(open_direct_room)(alice, "bob")

    for socket in (alice_socket, bob_socket):
        assert await receive_frame(socket) == {"type": "room.joined", "room": summary(direct, "member")}
    message = await send_as(bob, direct.pk, "hi", "d1")
    await expect_new(alice_socket, message)
    await expect_new(bob_socket, message)


# Leaving and removal


def after_first_handshake_read(monkeypatch, action) -> None:
    """Run `action` right after the handshake's first read, before the socket subscribes."""
    real_open_socket = consumers.open_socket

    def open_socket_then_act(session_key):
        opened = real_open_socket(session_key)
        action()
        return opened

    monkeypatch.setattr(consumers, "open_socket", open_socket_then_act)


async def test_join_between_handshake_reads(alice, carol, general, sockets, monkeypatch):
    # The handshake reads the user's rooms, subscribes, then reads the rooms
    # again for hello. A room joined in between (its event missed, as the
    # user's group was not joined yet) arrives as room.joined after hello.
    after_first_handshake_read(monkeypatch, lambda: join_room(carol, general.pk))
    socket, hello = await sockets.open(carol)

    assert hello["rooms"] == []
    assert await receive_frame(socket) == {"type": "room.joined", "room": summary(general, "member")}
    message = await send_as(alice, general.pk, "hello carol", "m1")
    await expect_new(socket, message)
    assert await socket.receive_nothing()


async def test_leave_between_handshake_reads(alice, bob, general, sockets, monkeypatch):
    # The mirror case: a room left between the two reads is not in hello,
    # and its messages do not reach the socket.
    after_first_handshake_read(monkeypatch, lambda: leave_room(bob, general.pk))
    socket, hello = await sockets.open(bob)

    assert hello["rooms"] == []
    await send_as(alice, general.pk, "bob has gone", "m1")
    assert await socket.receive_nothing()


async def test_user_events_reach_only_their_user(alice, bob, carol, general, sockets):
    # Events for one user share the process's hub channel with every other
    # user's; each goes to its own user's sockets alone.
    alice_socket, _ = await sockets.open(alice)
    bob_socket, _ = await sockets.open(bob)

    await db(leave_room)(bob, general.pk)

    assert await receive_frame(bob_socket) == {"type": "room.left", "room": general.pk}
    assert await alice_socket.receive_nothing()


async def test_leave_stops_delivery(alice, bob, general, sockets):
    leaver, _ = await sockets.open(bob)
    sender, _ = await sockets.open(alice)

    await db(leave_room)(bob, general.pk)

    assert await receive_frame(leaver) == {"type": "room.left", "room": general.pk}
    for number in range(3):
        message = await send_as(alice, general.pk, f"after {number}", f"a{number}")
        await expect_new(sender, message)
    assert await leaver.receive_nothing(timeout=0.3)


async def test_leave_twice_one_event(alice, bob, general, sockets):
    socket, _ = await sockets.open(bob)
    await db(leave_room)(bob, general.pk)
    assert await receive_frame(socket) == {"type": "room.left", "room": general.pk}

    await db(leave_room)(bob, general.pk)

    assert await socket.receive_nothing(timeout=0.3)


async def test_removed_stops_delivery(alice, bob, general, sockets):
    removed, _ = await sockets.open(bob)
    other_tab, _ = await sockets.open(bob)
    sender, _ = await sockets.open(alice)

    await db(remove_member)(alice, general.pk, bob.pk)

    for socket in (removed, other_tab):
        assert await receive_frame(socket) == {"type": "room.left", "room": general.pk}
    message = await send_as(alice, general.pk, "after removal", "r1")
    await expect_new(sender, message)
    assert await removed.receive_nothing(timeout=0.3)
    assert await other_tab.receive_nothing()


async def test_removed_member_send_rejected(alice, bob, general, sockets):
    socket, _ = await sockets.open(bob)
    await db(remove_member)(alice, general.pk, bob.pk)
    assert (await receive_frame(socket))["type"] == "room.left"

    await socket.send_json_to({"type": "message.send", "room": general.pk, "body": "still here?", "client_id": "b1"})

    assert await receive_frame(socket) == {
        "type": "error", "code": "not_member", "detail": "You are not a member of this room.",
        "retryable": False, "room": general.pk, "client_id": "b1",
    }
    assert await db(stored_messages)() == []


async def test_rejoin_after_leave(alice, bob, general, sockets):
    socket, _ = await sockets.open(bob)
    await db(leave_room)(bob, general.pk)
    assert (await receive_frame(socket))["type"] == "room.left"

    await db(join_room)(bob, general.pk)

    assert await receive_frame(socket) == {"type": "room.joined", "room": summary(general, "member")}
    message = await send_as(alice, general.pk, "welcome back", "w1")
    await expect_new(socket, message)


# Logout and account changes


def log_out(session_key: str) -> int:
    """POST to the real logout view with `session_key` as the session cookie and return the status code."""
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    return client.post("/accounts/logout/").status_code


async def test_logout_closes_socket(alice, bob, general, sockets):
    key = await db(session_cookie_for)(bob)
    logged_out, _ = await sockets.open(session_key=key)
    other_session, _ = await sockets.open(bob)
    sender, _ = await sockets.open(alice)

    assert await db(log_out)(key) == 302

    await expect_close(logged_out, CLOSE_LOGGED_OUT)
    assert not await db(Session.objects.filter(session_key=key).exists)()
    # The same user's socket on another session stays open.
    message = await send_as(alice, general.pk, "still there?", "m1")
    await expect_new(other_session, message)
    await expect_new(sender, message)


async def test_logout_get_keeps_socket(alice, bob, general, sockets):
    key = await db(session_cookie_for)(bob)
    socket, _ = await sockets.open(session_key=key)

    def get_logout():
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = key
        return client.get("/accounts/logout/").status_code

    assert await db(get_logout)() == 200  # a confirmation page, not a log-out
    message = await send_as(alice, general.pk, "hello", "m1")
    await expect_new(socket, message)


async def test_deactivation_closes_sockets(alice, bob, general, sockets):
    first, _ = await sockets.open(bob)
    second, _ = await sockets.open(bob)
    bystander, _ = await sockets.open(alice)

    bob.is_active = False
    await db(bob.save)()

    await expect_close(first, CLOSE_DEACTIVATED)
    await expect_close(second, CLOSE_DEACTIVATED)
    message = await send_as(alice, general.pk, "bob is gone", "m1")
    await expect_new(bystander, message)


async def test_deleted_user_sockets_closed(alice, bob, general, sockets):
    socket, _ = await sockets.open(bob)

    await db(bob.delete)()

    await expect_close(socket, CLOSE_DEACTIVATED)


async def test_other_save_keeps_socket(alice, bob, general, sockets):
    socket, _ = await sockets.open(bob)

    bob.display_name = "Robert"
    await db(bob.save)()

    assert (await receive_frame(socket))["type"] == "user.updated"
    message = await send_as(alice, general.pk, "hi Robert", "m1")
    await expect_new(socket, message)


async def test_rename_reaches_messages_sent_from_open_socket(alice, bob, general, sockets):
    # An open socket keeps a copy of its user's name for the messages it
    # sends; a rename refreshes it.
    alice_socket, _ = await sockets.open(alice)
    bob_socket, _ = await sockets.open(bob)

    bob.display_name = "Robert"
    await db(bob.save)()
    assert await receive_frame(bob_socket) == {
        "type": "user.updated",
        "user": {"id": bob.pk, "username": bob.username, "display_name": "Robert"},
    }

    await bob_socket.send_json_to({"type": "message.send", "room": general.pk, "body": "call me Robert", "client_id": "r1"})
    ack = await receive_frame(bob_socket)
    assert ack["type"] == "message.ack"
    assert ack["message"]["author"]["display_name"] == "Robert"
    new = await receive_frame(alice_socket)
    assert new["message"]["author"] == {"id": bob.pk, "username": bob.username, "display_name": "Robert"}


# Periodic revalidation repairs dropped events


@pytest.fixture
def fast_revalidation(monkeypatch):
    monkeypatch.setattr(consumers, "REVALIDATE_SECONDS", 0.2)


async def test_revalidation_drops_room(alice, bob, general, sockets, fast_revalidation):
    socket, _ = await sockets.open(bob)
    sender, _ = await sockets.open(alice)

    # Deleting the row directly sends no membership.left event.
    await db(Membership.objects.filter(room=general, user=bob).delete)()

    assert await receive_frame(socket, timeout=EVENT_TIMEOUT) == {"type": "room.left", "room": general.pk}
    for number in range(3):
        message = await send_as(alice, general.pk, f"unseen {number}", f"u{number}")
        await expect_new(sender, message)
    assert await socket.receive_nothing(timeout=0.6)


async def test_revalidation_adds_room(alice, carol, general, sockets, fast_revalidation):
    socket, _ = await sockets.open(carol)

    await db(Membership.objects.create)(room=general, user=carol, role=Membership.Role.MEMBER)

    assert await receive_frame(socket, timeout=EVENT_TIMEOUT) == {
        "type": "room.joined", "room": summary(general, "member"),
    }
    message = await send_as(alice, general.pk, "found you", "m1")
    await expect_new(socket, message)
    assert await socket.receive_nothing(timeout=0.6)


async def test_revalidation_closes_ended_session(alice, bob, general, sockets, fast_revalidation):
    key = await db(session_cookie_for)(bob)
    socket, _ = await sockets.open(session_key=key)

    await db(Session.objects.filter(session_key=key).delete)()

    await expect_close(socket, CLOSE_LOGGED_OUT)


async def test_revalidation_closes_inactive_user(alice, bob, general, sockets, fast_revalidation):
    socket, _ = await sockets.open(bob)

    # update() sends no post_save signal, so no user.deactivated event.
    await db(type(bob).objects.filter(pk=bob.pk).update)(is_active=False)

    await expect_close(socket, CLOSE_DEACTIVATED)


async def test_revalidation_keeps_valid_socket(alice, bob, general, sockets, fast_revalidation):
    socket, _ = await sockets.open(bob)

    assert await socket.receive_nothing(timeout=0.8)
    message = await send_as(alice, general.pk, "still subscribed", "m1")
    await expect_new(socket, message)


# Password changes end every other session


async def test_password_change_closes_old_sessions(alice, bob, general, sockets, monkeypatch):
    monkeypatch.setattr(consumers, "CREDENTIALS_SETTLE_SECONDS", 0)
    old_session, _ = await sockets.open(bob)
    bystander, _ = await sockets.open(alice)

    def change_password():
        bob.set_password("a-new-password-for-bob")
        bob.save()

    await db(change_password)()

    await expect_close(old_session, CLOSE_LOGGED_OUT)
    message = await send_as(alice, general.pk, "alice is unaffected", "m1")
    await expect_new(bystander, message)


async def test_session_after_password_change_stays(alice, bob, general, sockets, monkeypatch):
    monkeypatch.setattr(consumers, "CREDENTIALS_SETTLE_SECONDS", 0)

    def change_password():
        bob.set_password("a-new-password-for-bob")
        bob.save()

    await db(change_password)()
    # A session made with the new password is valid; the event for the
    # change above must not close it.
    new_session, _ = await sockets.open(bob)
    assert await new_session.receive_nothing(timeout=0.5)
    message = await send_as(alice, general.pk, "welcome back", "m1")
    await expect_new(new_session, message)


async def test_revalidation_closes_stale_password_session(alice, bob, general, sockets, fast_revalidation):
    socket, _ = await sockets.open(bob)

    # update() sends no event; only revalidation can notice the new hash.
    await db(type(bob).objects.filter(pk=bob.pk).update)(password="pbkdf2_sha256$1$salt$changed")

    await expect_close(socket, CLOSE_LOGGED_OUT)
