"""The WebSocket consumer through the real ASGI stack: every frame type and bad input.

Each bad frame must produce exactly one error frame, write nothing, and
leave the socket working. Each test then sends a good message and expects
its ack with seq 1.
"""

import asyncio
import json
import re

import pytest
from django.conf import settings
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from messaging.actions import send_message
from messaging.consumers import RATE_BURST
from messaging.fanout import get_hub
from messaging.models import Message
from messaging.queries import MAX_SYNC_BATCH
from messaging.sharding import shard_for_room
from rooms.actions import create_room, open_direct_room
from rooms.models import Room
from tests.conftest import receive_frame, session_cookie_for, stored_messages

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("fast_password_hasher"),
]

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
CLIENT_ID_DETAIL = "client_id must be 1 to 64 letters, digits or . _ : - characters."
SURROGATE_DETAIL = "The frame contains an unpaired surrogate (invalid Unicode)."
ROOM_DETAIL = "The field “room” must be an integer from 1 to 2^63 - 1."
BODY_DETAIL = "The field “body” must be a string."

stored = database_sync_to_async(stored_messages)


class RoomMarker:
    """A placeholder in a frame table for a room id known only inside the test."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


GENERAL = RoomMarker("GENERAL")
SECRET = RoomMarker("SECRET")


def error(code, detail, retryable=False, **extra):
    return {"type": "error", "code": code, "detail": detail, "retryable": retryable, **extra}


def invalid(detail, **extra):
    return error("invalid_frame", detail, **extra)


# A field value that removes the field from the frame.
OMIT = object()


def send(**fields):
    """Return a good message.send frame with `fields` replaced, added or (as OMIT) removed."""
    frame = {"type": "message.send", "room": GENERAL, "body": "hello", "client_id": "c1"}
    frame.update(fields)
    return {name: value for name, value in frame.items() if value is not OMIT}


@pytest.fixture
def secret(carol):
    """A private room that alice and bob are not in."""
    return create_room(carol, "secret", Room.Kind.PRIVATE)


def fill_rooms(frame, rooms: dict):
    if isinstance(frame, str):
        return frame
    return {name: rooms[value] if isinstance(value, RoomMarker) else value for name, value in frame.items()}


async def send_any(communicator, frame, rooms: dict) -> None:
    """Send a dict as JSON text, a str as raw text, bytes as a binary frame."""
    # send_input rather than send_to, which refuses an empty text frame.
    if isinstance(frame, bytes):
        await communicator.send_input({"type": "websocket.receive", "bytes": frame})
    elif isinstance(frame, str):
        await communicator.send_input({"type": "websocket.receive", "text": frame})
    else:
        await communicator.send_to(text_data=json.dumps(fill_rooms(frame, rooms)))


async def send_good(communicator, room_id: int, client_id: str = "good-1", body: str = "still working") -> dict:
    """Send a valid message and return it after checking its ack and echo."""
    await communicator.send_json_to({"type": "message.send", "room": room_id, "body": body, "client_id": client_id})
    ack = await receive_frame(communicator)
    assert ack["type"] == "message.ack", ack
    assert ack["client_id"] == client_id
    echo = await receive_frame(communicator)
    assert echo == {"type": "message.new", "message": ack["message"]}
    return ack["message"]


async def assert_only_good_message(room_id: int) -> None:
    rows = await stored()
    assert [(row.room_id, row.seq, row.client_id, row.body) for row in rows] == [
        (room_id, 1, "good-1", "still working")
    ]


def layer_group_members(group: str) -> set:
    return set(get_channel_layer().groups.get(group, {}))


# Handshake


@pytest.mark.parametrize(
    ("origin", "with_session"),
    [
        (b"http://localhost", False),
        (b"http://evil.example", True),
        (b"https://localhost.evil.example", True),
        (b"null", True),
        (None, True),
    ],
    ids=["no-session", "foreign-origin", "lookalike-origin", "null-origin", "no-origin"],
)
async def test_handshake_rejected(alice, general, sockets, origin, with_session):
    socket, hello = await sockets.open(alice if with_session else None, origin=origin)

    assert hello is None
    assert layer_group_members(f"user.{alice.pk}") == set()
    assert layer_group_members(f"room.{general.pk}") == set()
    assert await stored() == []


@pytest.mark.parametrize("path", ["/ws", "/wss/", "/anything", "/ws/extra/"])
async def test_handshake_unknown_path(alice, path):
    from channels.testing import WebsocketCommunicator

    from chatproject.asgi import application

    key = await database_sync_to_async(session_cookie_for)(alice)
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", f"sessionid={key}".encode())]
    communicator = WebsocketCommunicator(application, path, headers=headers)

    connected, _ = await communicator.connect()

    assert connected is False
    await communicator.disconnect()


async def test_handshake_unknown_session(alice, general, sockets):
    socket, hello = await sockets.open(session_key="x" * 32)
    assert hello is None
    assert layer_group_members(f"room.{general.pk}") == set()


async def test_handshake_inactive_user(alice, bob, general, sockets):
    key = await database_sync_to_async(session_cookie_for)(bob)
    bob.is_active = False
    await database_sync_to_async(bob.save)()

    socket, hello = await sockets.open(session_key=key)

    assert hello is None
    assert layer_group_members(f"user.{bob.pk}") == set()
    assert layer_group_members(f"room.{general.pk}") == set()
    assert await stored() == []


@pytest.mark.skipif(
    "InMemoryChannelLayer" not in settings.CHANNEL_LAYERS["default"]["BACKEND"],
    reason="reads the in-memory layer's group table",
)
async def test_handshake_accepted_subscribes(alice, bob, general, sockets):
    hub = get_hub()
    socket, hello = await sockets.open(alice)

    assert hello["type"] == "hello"
    # The process's hub joins each room and user group once, for all its
    # sockets; a socket has no channel of its own.
    assert layer_group_members(f"user.{alice.pk}") == {hub.channel_name}
    assert layer_group_members(f"room.{general.pk}") == {hub.channel_name}
    assert len(hub.sockets[general.pk]) == 1

    second, _ = await sockets.open(bob)
    third, _ = await sockets.open(alice)
    assert layer_group_members(f"room.{general.pk}") == {hub.channel_name}
    assert layer_group_members(f"user.{alice.pk}") == {hub.channel_name}
    assert len(hub.sockets[general.pk]) == 3
    assert len(hub.user_sockets[alice.pk]) == 2

    await socket.disconnect()
    assert layer_group_members(f"user.{alice.pk}") == {hub.channel_name}
    await second.disconnect()
    await third.disconnect()
    assert layer_group_members(f"user.{alice.pk}") == set()
    assert layer_group_members(f"room.{general.pk}") == set()
    assert general.pk not in hub.sockets


# Hello


async def test_hello_shape(alice, bob, general, sockets):
    alpha = await database_sync_to_async(create_room)(alice, "alpha", Room.Kind.PRIVATE, "Just me")
    direct = await database_sync_to_async(open_direct_room)(alice, "bob")
    await database_sync_to_async(send_message)(bob, general.pk, "one", "c1")
    await database_sync_to_async(send_message)(alice, general.pk, "two", "c2")

    socket, hello = await sockets.open(alice)

    assert hello == {
        "type": "hello",
        "user": {"id": alice.pk, "username": "alice", "display_name": "Alice"},
        "rooms": [
            {"id": direct.pk, "name": "alice, bob", "kind": "direct", "topic": "", "role": "member", "last_seq": 0},
            {"id": alpha.pk, "name": "alpha", "kind": "private", "topic": "Just me", "role": "owner", "last_seq": 0},
            {
                "id": general.pk,
                "name": "general",
                "kind": "public",
                "topic": "Everything",
                "role": "owner",
                "last_seq": 2,
            },
        ],
    }
    assert await socket.receive_nothing()


async def test_hello_outsider_no_rooms(carol, general, sockets):
    socket, hello = await sockets.open(carol)
    assert hello == {
        "type": "hello",
        "user": {"id": carol.pk, "username": "carol", "display_name": "Carol"},
        "rooms": [],
    }


# Sending


async def test_send_fans_out(alice, bob, carol, general, sockets):
    sender, _ = await sockets.open(alice)
    other_tab, _ = await sockets.open(alice)
    member, _ = await sockets.open(bob)
    outsider, _ = await sockets.open(carol)

    await sender.send_json_to({"type": "message.send", "room": general.pk, "body": "hi 👋🏽", "client_id": "c-1"})
    ack = await receive_frame(sender)

    row = (await stored())[0]
    message = {
        "id": str(row.id),
        "room": general.pk,
        "seq": 1,
        "author": {"id": alice.pk, "username": "alice", "display_name": "Alice"},
        "body": "hi 👋🏽",
        "created_at": row.created_at.isoformat(),
        "client_id": "c-1",
    }
    assert ack == {"type": "message.ack", "client_id": "c-1", "message": message}
    assert message["id"].isdigit()
    assert ISO_UTC.match(message["created_at"])
    assert await receive_frame(sender) == {"type": "message.new", "message": message}
    assert await receive_frame(other_tab) == {"type": "message.new", "message": message}
    assert await receive_frame(member) == {"type": "message.new", "message": message}
    assert await outsider.receive_nothing(timeout=0.3)
    for socket in (sender, other_tab, member):
        assert await socket.receive_nothing()


async def test_send_retry_acks_once_stored(alice, bob, general, sockets):
    sender, _ = await sockets.open(alice)
    member, _ = await sockets.open(bob)
    first = await send_good(sender, general.pk, "retry-1", "once")
    assert (await receive_frame(member))["message"] == first

    await sender.send_json_to({"type": "message.send", "room": general.pk, "body": "once", "client_id": "retry-1"})

    assert await receive_frame(sender) == {"type": "message.ack", "client_id": "retry-1", "message": first}
    assert await sender.receive_nothing()
    assert await member.receive_nothing()
    assert [(row.seq, row.client_id) for row in await stored()] == [(1, "retry-1")]


async def test_send_reused_client_id(alice, bob, general, sockets):
    sender, _ = await sockets.open(alice)
    member, _ = await sockets.open(bob)
    first = await send_good(sender, general.pk, "c1", "original")
    await receive_frame(member)

    await sender.send_json_to({"type": "message.send", "room": general.pk, "body": "edited", "client_id": "c1"})

    assert await receive_frame(sender) == error(
        "client_id_reused", "This client_id was already used for a different message.", client_id="c1"
    )
    assert await member.receive_nothing()
    rows = await stored()
    assert [(row.seq, row.body) for row in rows] == [(1, "original")]
    assert str(rows[0].id) == first["id"]


async def test_send_to_second_room(alice, bob, general, sockets):
    other = await database_sync_to_async(create_room)(alice, "other")
    sender, _ = await sockets.open(alice)
    member, _ = await sockets.open(bob)

    message = await send_good(sender, other.pk, "o1", "elsewhere")

    assert (message["room"], message["seq"]) == (other.pk, 1)
    assert await member.receive_nothing(timeout=0.3)


# Sync


async def test_sync_returns_missed(alice, bob, general, sockets):
    sent = [
        (await database_sync_to_async(send_message)(alice, general.pk, f"message {number}", f"m{number}")).message
        for number in range(1, 6)
    ]
    reader, _ = await sockets.open(bob)

    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 2, "limit": 2})
    assert await receive_frame(reader) == {
        "type": "sync.batch", "room": general.pk, "messages": sent[2:4], "has_more": True,
    }
    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 4, "limit": 2})
    assert await receive_frame(reader) == {
        "type": "sync.batch", "room": general.pk, "messages": sent[4:], "has_more": False,
    }
    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 0})
    assert await receive_frame(reader) == {
        "type": "sync.batch", "room": general.pk, "messages": sent, "has_more": False,
    }
    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 5})
    assert await receive_frame(reader) == {"type": "sync.batch", "room": general.pk, "messages": [], "has_more": False}
    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 2**62})
    assert await receive_frame(reader) == {"type": "sync.batch", "room": general.pk, "messages": [], "has_more": False}


def insert_messages(room_id: int, author_id: int, count: int) -> None:
    from django.utils import timezone

    Message.objects.using(shard_for_room(room_id)).bulk_create(
        [
            Message(
                id=1000 + seq, room_id=room_id, seq=seq, author_id=author_id, body=f"bulk {seq}",
                client_id=f"bulk-{seq}", created_at=timezone.now(),
            )
            for seq in range(1, count + 1)
        ]
    )


async def test_sync_limit_capped(alice, bob, general, sockets):
    await database_sync_to_async(insert_messages)(general.pk, alice.pk, MAX_SYNC_BATCH + 5)
    reader, _ = await sockets.open(bob)

    await reader.send_json_to({"type": "sync", "room": general.pk, "after_seq": 0, "limit": 10**9})
    batch = await receive_frame(reader)

    assert [message["seq"] for message in batch["messages"]] == list(range(1, MAX_SYNC_BATCH + 1))
    assert batch["has_more"] is True
    assert batch["messages"][0]["author"] == {"id": alice.pk, "username": "alice", "display_name": "Alice"}


async def test_sync_outsider_not_member(alice, carol, general, secret, sockets):
    await database_sync_to_async(send_message)(alice, general.pk, "members only", "m1")
    reader, _ = await sockets.open(alice)

    for room_id in (secret.pk, 987654):
        await reader.send_json_to({"type": "sync", "room": room_id, "after_seq": 0})
        assert await receive_frame(reader) == error("not_member", "You are not a member of this room.", room=room_id)

    outsider, _ = await sockets.open(carol)
    await outsider.send_json_to({"type": "sync", "room": general.pk, "after_seq": 0})
    assert await receive_frame(outsider) == error("not_member", "You are not a member of this room.", room=general.pk)
    await send_good(reader, general.pk, "good-2")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "sync", "room": GENERAL}, invalid("The field “after_seq” is missing.")),
        ({"type": "sync", "after_seq": 0}, invalid("The field “room” is missing.")),
        ({"type": "sync", "room": GENERAL, "after_seq": -1}, invalid("The field “after_seq” must be an integer from 0 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": "0"}, invalid("The field “after_seq” must be an integer from 0 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": False}, invalid("The field “after_seq” must be an integer from 0 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": 0.5}, invalid("The field “after_seq” must be an integer from 0 to 2^63 - 1.")),
        ({"type": "sync", "room": "1", "after_seq": 0}, invalid(ROOM_DETAIL)),
        ({"type": "sync", "room": GENERAL, "after_seq": 0, "limit": 0}, invalid("The field “limit” must be an integer from 1 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": 0, "limit": True}, invalid("The field “limit” must be an integer from 1 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": 0, "limit": "5"}, invalid("The field “limit” must be an integer from 1 to 2^63 - 1.")),
        ({"type": "sync", "room": GENERAL, "after_seq": 0, "before": 9}, invalid("Unknown field “before”.")),
        (
            {"type": "sync", "room": GENERAL, "after_seq": 0, "client_id": "s1"},
            invalid("Unknown field “client_id”.", client_id="s1"),
        ),
        ({"type": "sync", "room": GENERAL, "after_seq": 0, "seq": 1}, invalid("The field “seq” is set by the server; do not send it.")),
    ],
    ids=[
        "no-after-seq", "no-room", "negative-after-seq", "string-after-seq", "bool-after-seq", "float-after-seq",
        "string-room", "zero-limit", "bool-limit", "string-limit", "unknown-field", "client-id-field", "seq-field",
    ],
)
async def test_sync_bad_frame(alice, general, sockets, frame, expected):
    socket, _ = await sockets.open(alice)

    await send_any(socket, frame, {GENERAL: general.pk})

    assert await receive_frame(socket) == expected
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


# Bad message.send frames


BAD_SEND_FRAMES = [
    # Not a JSON object
    pytest.param('{"type": "message.send"', invalid("The frame is not valid JSON."), id="malformed-json"),
    pytest.param("", invalid("The frame is not valid JSON."), id="empty-text"),
    pytest.param("message.send", invalid("The frame is not valid JSON."), id="bare-word"),
    pytest.param("{'type': 'ping'}", invalid("The frame is not valid JSON."), id="single-quotes"),
    pytest.param('{"type": "ping"} {"type": "ping"}', invalid("The frame is not valid JSON."), id="two-objects"),
    pytest.param("[]", invalid("The frame must be a JSON object."), id="json-array"),
    pytest.param('[{"type": "ping"}]', invalid("The frame must be a JSON object."), id="array-of-frames"),
    pytest.param('"message.send"', invalid("The frame must be a JSON object."), id="json-string"),
    pytest.param("42", invalid("The frame must be a JSON object."), id="json-number"),
    pytest.param("null", invalid("The frame must be a JSON object."), id="json-null"),
    pytest.param("true", invalid("The frame must be a JSON object."), id="json-true"),
    pytest.param(b'{"type": "ping"}', invalid("Binary frames are not supported; send JSON text frames."), id="binary"),
    # The type
    pytest.param(send(type=OMIT), error("unknown_type", "The frame has no “type” field.", client_id="c1"), id="no-type"),
    pytest.param(send(type=None), error("unknown_type", "Unknown frame type null.", client_id="c1"), id="null-type"),
    pytest.param(send(type=5), error("unknown_type", "Unknown frame type 5.", client_id="c1"), id="number-type"),
    pytest.param(
        send(type=["message.send"]),
        error("unknown_type", 'Unknown frame type ["message.send"].', client_id="c1"),
        id="list-type",
    ),
    pytest.param(send(type=""), error("unknown_type", 'Unknown frame type "".', client_id="c1"), id="empty-type"),
    pytest.param(
        send(type="MESSAGE.SEND"), error("unknown_type", 'Unknown frame type "MESSAGE.SEND".', client_id="c1"),
        id="upper-case-type",
    ),
    pytest.param(
        send(type="message.send "), error("unknown_type", 'Unknown frame type "message.send ".', client_id="c1"),
        id="padded-type",
    ),
    pytest.param(
        send(type="message.delete"), error("unknown_type", 'Unknown frame type "message.delete".', client_id="c1"),
        id="unknown-type",
    ),
    # The room
    pytest.param(send(room="1"), invalid(ROOM_DETAIL, client_id="c1"), id="string-room"),
    pytest.param(send(room=True), invalid(ROOM_DETAIL, client_id="c1"), id="bool-room"),
    pytest.param(send(room=1.5), invalid(ROOM_DETAIL, client_id="c1"), id="float-room"),
    pytest.param(send(room=1.0), invalid(ROOM_DETAIL, client_id="c1"), id="whole-float-room"),
    pytest.param(send(room=-1), invalid(ROOM_DETAIL, client_id="c1"), id="negative-room"),
    pytest.param(send(room=0), invalid(ROOM_DETAIL, client_id="c1"), id="zero-room"),
    pytest.param(send(room=None), invalid(ROOM_DETAIL, client_id="c1"), id="null-room"),
    pytest.param(send(room=[1]), invalid(ROOM_DETAIL, client_id="c1"), id="list-room"),
    pytest.param(send(room=OMIT), invalid("The field “room” is missing.", client_id="c1"), id="no-room"),
    pytest.param(
        '{"type": "message.send", "room": NaN, "body": "hello", "client_id": "c1"}',
        invalid(ROOM_DETAIL, client_id="c1"),
        id="nan-room",
    ),
    pytest.param(
        '{"type": "message.send", "room": Infinity, "body": "hello", "client_id": "c1"}',
        invalid(ROOM_DETAIL, client_id="c1"),
        id="infinity-room",
    ),
    pytest.param(
        send(room=987654), error("not_member", "You are not a member of this room.", room=987654, client_id="c1"),
        id="missing-room",
    ),
    pytest.param(
        send(room=SECRET), error("not_member", "You are not a member of this room.", room=SECRET, client_id="c1"),
        id="private-room",
    ),
    pytest.param(
        send(room=2**62), error("not_member", "You are not a member of this room.", room=2**62, client_id="c1"),
        id="huge-room",
    ),
    # The body
    pytest.param(send(body=5), invalid(BODY_DETAIL, client_id="c1"), id="number-body"),
    pytest.param(send(body=None), invalid(BODY_DETAIL, client_id="c1"), id="null-body"),
    pytest.param(send(body=["hello"]), invalid(BODY_DETAIL, client_id="c1"), id="list-body"),
    pytest.param(send(body={"text": "hello"}), invalid(BODY_DETAIL, client_id="c1"), id="object-body"),
    pytest.param(send(body=False), invalid(BODY_DETAIL, client_id="c1"), id="bool-body"),
    pytest.param(send(body=OMIT), invalid("The field “body” is missing.", client_id="c1"), id="no-body"),
    pytest.param(send(body=""), error("empty_body", "The message body is empty.", client_id="c1"), id="empty-body"),
    pytest.param(
        send(body=" \n\t "), error("empty_body", "The message body is empty.", client_id="c1"), id="blank-body"
    ),
    pytest.param(
        send(body="x" * 4001),
        error(
            "too_long", "The message body has 4001 characters; the maximum is 4000.", max_length=4000, client_id="c1"
        ),
        id="4001-body",
    ),
    pytest.param(
        '{"type": "message.send", "room": %ROOM%, "body": "\\ud800", "client_id": "c1"}',
        invalid(SURROGATE_DETAIL),
        id="lone-surrogate-body",
    ),
    # The client_id
    pytest.param(
        send(client_id=""), error("invalid_input", CLIENT_ID_DETAIL, field="client_id", client_id=""),
        id="empty-client-id",
    ),
    pytest.param(
        send(client_id="x" * 65), error("invalid_input", CLIENT_ID_DETAIL, field="client_id", client_id="x" * 65),
        id="65-char-client-id",
    ),
    pytest.param(
        send(client_id="two words"),
        error("invalid_input", CLIENT_ID_DETAIL, field="client_id", client_id="two words"),
        id="client-id-with-space",
    ),
    pytest.param(
        send(client_id="c1\n"), error("invalid_input", CLIENT_ID_DETAIL, field="client_id", client_id="c1\n"),
        id="client-id-trailing-newline",
    ),
    pytest.param(
        send(client_id="ünï"), error("invalid_input", CLIENT_ID_DETAIL, field="client_id", client_id="ünï"),
        id="non-ascii-client-id",
    ),
    pytest.param(send(client_id=5), invalid("The field “client_id” must be a string."), id="number-client-id"),
    pytest.param(send(client_id=None), invalid("The field “client_id” must be a string."), id="null-client-id"),
    pytest.param(send(client_id=OMIT), invalid("The field “client_id” is missing."), id="no-client-id"),
    # Fields the frame may not carry
    pytest.param(send(foo=1), invalid("Unknown field “foo”.", client_id="c1"), id="unknown-field"),
    pytest.param(send(Room=1), invalid("Unknown field “Room”.", client_id="c1"), id="miscased-field"),
    pytest.param(send(nonce="n"), invalid("Unknown field “nonce”.", client_id="c1"), id="field-of-other-type"),
]
BAD_SEND_FRAMES += [
    pytest.param(
        send(**{name: 1}),
        invalid(f"The field “{name}” is set by the server; do not send it.", client_id="c1"),
        id=f"server-field-{name}",
    )
    for name in ("id", "seq", "author", "author_id", "created_at", "message", "user")
]
BAD_SEND_FRAMES += [
    pytest.param(
        send(body="x" * (64 * 1024)), invalid("The frame is larger than 65536 characters."), id="frame-over-64k"
    ),
]


@pytest.mark.parametrize(("frame", "expected"), BAD_SEND_FRAMES)
async def test_bad_send_frame(alice, bob, general, secret, sockets, frame, expected):
    rooms = {GENERAL: general.pk, SECRET: secret.pk}
    socket, _ = await sockets.open(alice)
    member, _ = await sockets.open(bob)
    if isinstance(frame, str):
        frame = frame.replace("%ROOM%", str(general.pk))

    await send_any(socket, frame, rooms)

    assert await receive_frame(socket) == fill_rooms(expected, rooms)
    assert await member.receive_nothing()
    good = await send_good(socket, general.pk)
    assert good["seq"] == 1
    assert (await receive_frame(member))["message"] == good
    await assert_only_good_message(general.pk)


async def test_frame_at_size_limit_parsed(alice, general, sockets):
    socket, _ = await sockets.open(alice)
    frame = {"type": "message.send", "room": general.pk, "body": "", "client_id": "c1"}
    padding = 64 * 1024 - len(json.dumps(frame))
    frame["body"] = "x" * padding
    assert len(json.dumps(frame)) == 64 * 1024

    await socket.send_json_to(frame)

    # Parsed (not rejected for size), then refused for its body length.
    reply = await receive_frame(socket)
    assert (reply["code"], reply["max_length"], reply["client_id"]) == ("too_long", 4000, "c1")
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        '{"type": "message.send", "room": 1, "body": "x", "client_id": "c1", "extra": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["nested-arrays", "nested-objects", "nested-field"],
)
async def test_deeply_nested_json(alice, general, sockets, text):
    socket, _ = await sockets.open(alice)
    assert len(text) < 64 * 1024

    await socket.send_to(text_data=text)

    reply = await receive_frame(socket, timeout=1)
    assert (reply["type"], reply["code"], reply["retryable"]) == ("error", "invalid_frame", False)
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


@pytest.mark.parametrize("room_id", [2**63, 2**64, 10**30], ids=["2^63", "2^64", "10^30"])
async def test_out_of_range_room(alice, general, sockets, room_id):
    # A room id no BIGINT column can hold is a bad frame, not a server
    # failure that the client would retry.
    socket, _ = await sockets.open(alice)

    await socket.send_json_to({"type": "message.send", "room": room_id, "body": "hello", "client_id": "c1"})
    assert await receive_frame(socket) == invalid(ROOM_DETAIL, client_id="c1")
    await socket.send_json_to({"type": "sync", "room": room_id, "after_seq": 0})
    assert await receive_frame(socket) == invalid(ROOM_DETAIL)
    await socket.send_json_to({"type": "sync", "room": general.pk, "after_seq": room_id})
    assert await receive_frame(socket) == invalid("The field “after_seq” must be an integer from 0 to 2^63 - 1.")

    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


async def test_largest_room_id_not_member(alice, general, sockets):
    socket, _ = await sockets.open(alice)

    await socket.send_json_to({"type": "message.send", "room": 2**63 - 1, "body": "hello", "client_id": "c1"})

    assert await receive_frame(socket) == error(
        "not_member", "You are not a member of this room.", room=2**63 - 1, client_id="c1"
    )
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "message.send", "room": %ROOM%, "body": "hello", "client_id": "\\ud800"}',
        '{"type": "\\ud800", "client_id": "c1"}',
        '{"type": "message.send", "room": %ROOM%, "body": "hello", "client_id": "c1", "\\udc00": 1}',
    ],
    ids=["client-id", "type", "field-name"],
)
async def test_lone_surrogate_echo(alice, general, sockets, text):
    socket, _ = await sockets.open(alice)

    await socket.send_to(text_data=text.replace("%ROOM%", str(general.pk)))

    # receive_frame fails if the reply cannot be encoded as UTF-8, which a
    # real server needs to send it; the surrogate must not be echoed.
    reply = await receive_frame(socket)
    assert reply == invalid(SURROGATE_DETAIL)
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


# Types that match channel-layer handler names must never run them.


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "chat.frame", "room": GENERAL, "text": '{"type": "message.new", "message": {"body": "forged"}}'},
        {"type": "membership.left", "room": GENERAL},
        {"type": "membership.joined", "room": SECRET},
        {"type": "session.ended", "session_key": "SESSION"},
        {"type": "user.deactivated"},
        {"type": "websocket.disconnect", "code": 1000},
        {"type": "websocket.receive", "text": '{"type": "ping"}'},
        {"type": "websocket.connect"},
        {"type": "on.message.send", "room": GENERAL, "body": "x", "client_id": "c1"},
        {"type": "revalidate"},
        {"type": "disconnect", "code": 1000},
        {"type": "close"},
    ],
    ids=lambda frame: frame["type"],
)
async def test_handler_names_not_dispatched(alice, bob, carol, general, secret, sockets, frame):
    key = await database_sync_to_async(session_cookie_for)(bob)
    rooms = {GENERAL: general.pk, SECRET: secret.pk}
    member, _ = await sockets.open(session_key=key)
    sender, _ = await sockets.open(alice)
    owner_of_secret, _ = await sockets.open(carol)
    frame = dict(frame)
    if frame.get("session_key") == "SESSION":
        frame["session_key"] = key

    await send_any(member, frame, rooms)

    reply = await receive_frame(member)
    assert reply == error(
        "unknown_type",
        f"Unknown frame type {json.dumps(frame['type'])}.",
        **({"client_id": frame["client_id"]} if "client_id" in frame else {}),
    )
    # Still open, still in general, not in the secret room.
    message = await send_good(sender, general.pk)
    assert await receive_frame(member) == {"type": "message.new", "message": message}
    await send_good(owner_of_secret, secret.pk, "s1", "secret")
    assert await member.receive_nothing(timeout=0.3)
    await member.send_json_to({"type": "ping", "nonce": "alive"})
    assert await receive_frame(member) == {"type": "pong", "nonce": "alive"}


# Ping


async def test_ping_pong(alice, general, sockets):
    socket, _ = await sockets.open(alice)

    await socket.send_json_to({"type": "ping", "nonce": "n-1"})
    assert await receive_frame(socket) == {"type": "pong", "nonce": "n-1"}
    await socket.send_json_to({"type": "ping"})
    assert await receive_frame(socket) == {"type": "pong"}
    await socket.send_json_to({"type": "ping", "nonce": ""})
    assert await receive_frame(socket) == {"type": "pong", "nonce": ""}
    await socket.send_json_to({"type": "ping", "nonce": "ünï 👋"})
    assert await receive_frame(socket) == {"type": "pong", "nonce": "ünï 👋"}
    await socket.send_json_to({"type": "ping", "nonce": "n" * 64})
    assert await receive_frame(socket) == {"type": "pong", "nonce": "n" * 64}
    assert await socket.receive_nothing()


NONCE_ERROR = "The field “nonce” must be a string of at most 64 characters."


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "ping", "nonce": 5}, invalid(NONCE_ERROR)),
        ({"type": "ping", "nonce": None}, invalid(NONCE_ERROR)),
        ({"type": "ping", "nonce": "n" * 65}, invalid(NONCE_ERROR)),
        ({"type": "ping", "room": 1}, invalid("Unknown field “room”.")),
        ({"type": "ping", "client_id": "p1"}, invalid("Unknown field “client_id”.", client_id="p1")),
    ],
    ids=["number-nonce", "null-nonce", "long-nonce", "room-field", "client-id-field"],
)
async def test_ping_bad_frame(alice, general, sockets, frame, expected):
    socket, _ = await sockets.open(alice)

    await socket.send_json_to(frame)

    assert await receive_frame(socket) == expected
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


async def test_ping_lone_surrogate_nonce(alice, general, sockets):
    socket, _ = await sockets.open(alice)

    await socket.send_to(text_data='{"type": "ping", "nonce": "\\ud800"}')

    assert await receive_frame(socket) == invalid(SURROGATE_DETAIL)
    await send_good(socket, general.pk)


# Rate limit


async def test_rate_limited(alice, general, sockets):
    socket, _ = await sockets.open(alice)
    frames_sent = RATE_BURST + 10

    for number in range(frames_sent):
        await socket.send_json_to({"type": "ping", "nonce": str(number)})
    replies = [await receive_frame(socket) for _ in range(frames_sent)]

    pongs = [reply for reply in replies if reply["type"] == "pong"]
    limited = [reply for reply in replies if reply["type"] == "error"]
    assert replies[:RATE_BURST] == [{"type": "pong", "nonce": str(number)} for number in range(RATE_BURST)]
    assert len(pongs) + len(limited) == frames_sent
    assert limited, "no frame was rate limited"
    for reply in limited:
        assert set(reply) == {"type", "code", "detail", "retryable", "retry_after"}
        assert (reply["code"], reply["retryable"]) == ("rate_limited", True)
        assert 0 < reply["retry_after"] <= 0.11
        assert re.fullmatch(r"Too many frames; wait 0\.\d\d s\.", reply["detail"]), reply["detail"]

    await asyncio.sleep(limited[-1]["retry_after"] + 0.05)
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


async def test_rate_limited_send_not_stored(alice, general, sockets):
    socket, _ = await sockets.open(alice)
    pings = RATE_BURST + 5
    for number in range(pings):
        await socket.send_json_to({"type": "ping", "nonce": str(number)})
    await socket.send_json_to({"type": "message.send", "room": general.pk, "body": "too fast", "client_id": "fast-1"})

    replies = [await receive_frame(socket) for _ in range(pings + 1)]

    reply = replies[-1]
    assert (reply["code"], reply["client_id"], reply["retryable"]) == ("rate_limited", "fast-1", True)
    assert await stored() == []
    await asyncio.sleep(reply["retry_after"] + 0.05)
    await send_good(socket, general.pk)
    await assert_only_good_message(general.pk)


async def test_rate_limit_per_socket(alice, bob, general, sockets):
    busy, _ = await sockets.open(alice)
    calm, _ = await sockets.open(bob)
    for number in range(RATE_BURST + 10):
        await busy.send_json_to({"type": "ping", "nonce": str(number)})
    replies = [await receive_frame(busy) for _ in range(RATE_BURST + 10)]
    assert any(reply["type"] == "error" for reply in replies)

    await calm.send_json_to({"type": "ping", "nonce": "calm"})
    assert await receive_frame(calm) == {"type": "pong", "nonce": "calm"}


# One user's errors do not reach another user's socket.


async def test_errors_isolated_between_users(alice, bob, general, sockets):
    watcher, _ = await sockets.open(alice)
    troublemaker, _ = await sockets.open(bob)
    bad_frames = [
        "{not json",
        "[]",
        json.dumps({"type": "message.send", "room": "x", "body": 1, "client_id": 2}),
        json.dumps({"type": "membership.left", "room": general.pk}),
        json.dumps({"type": "message.send", "room": 987654, "body": "x", "client_id": "b1"}),
        json.dumps({"type": "message.send", "room": general.pk, "body": "", "client_id": "b2"}),
    ]

    for text in bad_frames:
        await troublemaker.send_to(text_data=text)
        assert (await receive_frame(troublemaker))["type"] == "error"
    await troublemaker.send_to(bytes_data=b"\x00\x01")
    assert (await receive_frame(troublemaker))["type"] == "error"

    assert await watcher.receive_nothing(timeout=0.3)
    message = await send_good(troublemaker, general.pk, "good-1")
    assert await receive_frame(watcher) == {"type": "message.new", "message": message}
    await assert_only_good_message(general.pk)

