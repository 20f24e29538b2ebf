"""send_message: idempotent retries, input checks, exact storage and query counts."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test.utils import CaptureQueriesContext

from chatproject.errors import ChatError
from messaging import ids
from messaging.actions import send_message, validate_client_id
from messaging.models import Message, RoomSequence, ShardBucket
from messaging.payloads import iso_utc
from messaging.sharding import bucket_for_room, bucket_map, shard_for_room
from rooms.actions import create_room, join_room
from rooms.models import Membership, Room
from tests.conftest import stored_messages

pytestmark = [
    pytest.mark.django_db(databases="__all__"),
    pytest.mark.usefixtures("fast_password_hasher"),
]

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


@pytest.fixture(autouse=True)
def fresh_bucket_map():
    bucket_map.invalidate()
    yield
    bucket_map.invalidate()


def raw_body(message_id: int, alias: str) -> str:
    """Read a body with plain SQL on the shard, past the model layer."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT body FROM messaging_message WHERE id = %s", [message_id])
        return cursor.fetchone()[0]


def assert_error(raised, code: str, **extra) -> None:
    error = raised.value
    assert isinstance(error, ChatError)
    assert error.code == code
    for name, value in extra.items():
        assert error.extra.get(name) == value, name


# Result and storage


def test_send_result_shape(alice, general):
    result = send_message(alice, general.pk, "hello", "c1")

    row = Message.objects.using(shard_for_room(general.pk)).get()
    assert result.created is True
    assert result.message == {
        "id": str(row.id),
        "room": general.pk,
        "seq": 1,
        "author": {"id": alice.pk, "username": "alice", "display_name": "Alice"},
        "body": "hello",
        "created_at": iso_utc(row.created_at),
        "client_id": "c1",
    }
    assert ISO_UTC.match(result.message["created_at"])
    assert (row.room_id, row.seq, row.author_id, row.body, row.client_id) == (general.pk, 1, alice.pk, "hello", "c1")
    assert RoomSequence.objects.using(shard_for_room(general.pk)).get(room_id=general.pk).last_seq == 1


def test_display_name_falls_back_to_username(make_user, general):
    dave = make_user("dave", display_name="")
    join_room(dave, general.pk)

    author = send_message(dave, general.pk, "hi", "c1").message["author"]

    assert author == {"id": dave.pk, "username": "dave", "display_name": "dave"}


# Idempotency


def test_retry_returns_same_message(alice, general):
    first = send_message(alice, general.pk, "hello", "retry-1")
    second = send_message(alice, general.pk, "hello", "retry-1")

    assert first.created is True
    assert second.created is False
    assert second.message == first.message
    assert [(row.seq, row.body) for row in stored_messages()] == [(1, "hello")]


def test_reused_client_id_rejected(alice, general):
    send_message(alice, general.pk, "hello", "c1")

    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, "hello again", "c1")

    assert_error(raised, "client_id_reused", client_id="c1")
    assert raised.value.status == 409
    assert raised.value.retryable is False
    assert [(row.seq, row.body) for row in stored_messages()] == [(1, "hello")]
    assert send_message(alice, general.pk, "next", "c2").message["seq"] == 2


def test_client_id_per_author(alice, bob, general):
    first = send_message(alice, general.pk, "same text", "shared")
    second = send_message(bob, general.pk, "other text", "shared")

    assert second.created is True
    assert second.message["id"] != first.message["id"]
    assert [(row.author_id, row.seq) for row in stored_messages()] == [(alice.pk, 1), (bob.pk, 2)]


def test_client_id_per_room(alice, general):
    other = create_room(alice, "other")
    first = send_message(alice, general.pk, "same", "shared")
    second = send_message(alice, other.pk, "same", "shared")

    assert second.created is True
    assert second.message["id"] != first.message["id"]
    assert (first.message["seq"], second.message["seq"]) == (1, 1)
    assert sorted((row.room_id, row.seq) for row in stored_messages()) == [(general.pk, 1), (other.pk, 1)]


# Input checks


@pytest.mark.parametrize(
    ("body", "code", "extra"),
    [
        ("", "empty_body", {}),
        ("   \n\t  ", "empty_body", {}),
        ("\u3000\u2003", "empty_body", {}),
        ("x" * 4001, "too_long", {"max_length": 4000}),
        ("😀" * 4001, "too_long", {"max_length": 4000}),
        (5, "invalid_input", {"field": "body"}),
        (None, "invalid_input", {"field": "body"}),
        (["hi"], "invalid_input", {"field": "body"}),
        ({"text": "hi"}, "invalid_input", {"field": "body"}),
        (b"hi", "invalid_input", {"field": "body"}),
        ("\ud800", "invalid_input", {"field": "body"}),
        ("before \udfff after", "invalid_input", {"field": "body"}),
    ],
    ids=[
        "empty", "whitespace", "unicode-spaces", "4001", "4001-emoji", "number", "none", "list", "dict",
        "bytes", "lone-surrogate", "lone-low-surrogate",
    ],
)
def test_body_rejected(alice, general, body, code, extra):
    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, body, "c1")

    assert_error(raised, code, **extra)
    assert stored_messages() == []
    assert RoomSequence.objects.using(shard_for_room(general.pk)).count() == 0


def test_body_too_long_detail(alice, general):
    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, "x" * 4001, "c1")
    assert raised.value.detail == "The message body has 4001 characters; the maximum is 4000."


def test_body_at_limit_accepted(alice, general):
    for body in ("x" * 4000, "😀" * 4000, " " * 3999 + "x"):
        result = send_message(alice, general.pk, body, f"c{len(stored_messages())}")
        assert result.created is True
        assert result.message["body"] == body
    assert [row.seq for row in stored_messages()] == [1, 2, 3]


@pytest.mark.parametrize(
    "client_id",
    ["", "x" * 65, "two words", "tab\tinside", "é", "a/b", "a#b", "trailing\n", "x" * 64 + "\n", 5, None, ["c1"]],
    ids=[
        "empty", "65-chars", "space", "tab", "non-ascii", "slash", "hash", "trailing-newline",
        "64-chars-and-newline", "number", "none", "list",
    ],
)
def test_client_id_rejected(alice, general, client_id):
    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, "hello", client_id)

    assert_error(raised, "invalid_input", field="client_id")
    assert raised.value.detail == "client_id must be 1 to 64 letters, digits or . _ : - characters."
    assert stored_messages() == []


def test_client_id_accepted_forms(alice, general):
    accepted = ["a", "x" * 64, "0f8fad5b-d9cb-469f-a165-70867728950e", "web:tab.2_retry-1", "ABC"]
    for client_id in accepted:
        assert validate_client_id(client_id) == client_id
        assert send_message(alice, general.pk, "hello", client_id).created is True
    assert [row.client_id for row in stored_messages()] == accepted


def test_non_member_rejected(alice, carol, general):
    with pytest.raises(ChatError) as raised:
        send_message(carol, general.pk, "let me in", "c1")

    assert_error(raised, "not_member", room=general.pk)
    assert raised.value.status == 403
    assert stored_messages() == []
    assert not Membership.objects.filter(user=carol).exists()


@pytest.mark.parametrize("room_id", [987654, 0, -1, 2**62], ids=["missing", "zero", "negative", "huge"])
def test_missing_room_rejected(alice, general, room_id):
    with pytest.raises(ChatError) as raised:
        send_message(alice, room_id, "hello", "c1")

    assert_error(raised, "not_member", room=room_id)
    assert stored_messages() == []


def test_private_room_outsider_rejected(alice, bob):
    secret = create_room(alice, "secret", Room.Kind.PRIVATE)

    with pytest.raises(ChatError) as raised:
        send_message(bob, secret.pk, "hello", "c1")

    assert_error(raised, "not_member", room=secret.pk)
    assert stored_messages() == []


def test_frozen_bucket_retryable(alice, general):
    ShardBucket.objects.create(bucket=bucket_for_room(general.pk), alias=shard_for_room(general.pk), frozen=True)
    bucket_map.invalidate()

    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, "hello", "c1")

    assert_error(raised, "shard_unavailable")
    assert raised.value.retryable is True
    assert raised.value.status == 503
    assert stored_messages() == []
    assert RoomSequence.objects.using(shard_for_room(general.pk)).count() == 0


# Bodies stored exactly as sent


EXACT_BODIES = {
    "spaces": "  leading and trailing  ",
    "newlines": "line one\nline two\r\nline three\n\n",
    "tabs": "\tindented\t",
    "skin-tone": "👋🏽 👍🏿",
    "zwj-family": "👨‍👩‍👧‍👦 and 👩‍❤️‍👨",
    "flags": "🇺🇦🇯🇵🏳️‍🌈",
    "cjk": "你好，世界。日本語のテキスト。한국어",
    "math-letters": "𝕳𝖊𝖑𝖑𝖔 𝒙² + 𝒚² = 𝒛²",
    "html": "<script>alert('x')</script> & <b>bold</b> &amp;",
    "sql": "'; DROP TABLE messaging_message; --",
    "combining": "e\u0301 vs \u00e9",
    "rtl": "مرحبا بالعالم \u202eabc",
    "zero-width": "a\u200bb\ufeffc",
    "quotes": "\"double\" 'single' `back` \\backslash\\",
    "astral-only": "𐍈𐍉𐍊",
}


def test_bodies_stored_exactly(alice, general):
    alias = shard_for_room(general.pk)
    for name, body in EXACT_BODIES.items():
        result = send_message(alice, general.pk, body, f"exact-{name}")
        message_id = int(result.message["id"])

        stored = raw_body(message_id, alias)
        assert stored == body, name
        assert stored.encode("utf-8") == body.encode("utf-8"), name
        assert result.message["body"] == body, name
        assert Message.objects.using(alias).get(id=message_id).body == body, name

    other = "shard_1" if alias == "shard_0" else "shard_0"
    assert Message.objects.using(other).count() == 0


# Query counts


def add_members(room: Room, count: int) -> None:
    """Add `count` users to a room with two bulk inserts (no password hashing)."""
    User = get_user_model()
    start = User.objects.count()
    users = User.objects.bulk_create(
        [User(username=f"member{start + index}", password="!") for index in range(count)]
    )
    Membership.objects.bulk_create([Membership(room=room, user=user) for user in users])


def count_send_queries(author, room: Room, client_id: str) -> tuple[int, int]:
    """Return (queries on default, queries on the room's shard) for one send."""
    alias = shard_for_room(room.pk)
    bucket_map.invalidate()
    with CaptureQueriesContext(connections["default"]) as on_default:
        with CaptureQueriesContext(connections[alias]) as on_shard:
            send_message(author, room.pk, "counted", client_id)
    return len(on_default), len(on_shard)


def test_query_count_independent_of_members(alice, general, monkeypatch):
    monkeypatch.setattr(ids, "RENEW_AFTER_SECONDS", 10**9)
    crowded = create_room(alice, "crowded")
    add_members(crowded, 499)
    assert Membership.objects.filter(room=general).count() == 2
    assert Membership.objects.filter(room=crowded).count() == 500
    # The first message of a room creates its sequence row, and the first
    # id of the process may lease a worker id: count the second send.
    send_message(alice, general.pk, "warm-up", "warm")
    send_message(alice, crowded.pk, "warm-up", "warm")

    small = count_send_queries(alice, general, "counted")
    large = count_send_queries(alice, crowded, "counted")

    assert small == large
    # default: the bucket map load (the membership check was cached by the
    # warm-up send). Shard: the
    # retry lookup, a savepoint around the write (the test runs inside a
    # transaction), the sequence update and read, the bucket fence read,
    # the insert and the savepoint release.
    assert small == (1, 7)


@pytest.mark.parametrize(
    "body",
    ["\u200b", " \u200b\u200d\n", "\u2060\ufeff", "\u200e\t"],
    ids=["zero-width-space", "spaces-and-joiners", "word-joiner-bom", "direction-mark-tab"],
)
def test_invisible_body_is_empty(alice, general, body):
    with pytest.raises(ChatError) as raised:
        send_message(alice, general.pk, body, "c1")

    assert raised.value.code == "empty_body"
    assert stored_messages() == []


def test_body_with_joiner_and_text_kept(alice, general):
    body = "👩\u200d💻 ok\u200b"
    result = send_message(alice, general.pk, body, "c1")
    assert result.message["body"] == body
