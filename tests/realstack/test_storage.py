"""utf8mb4 everywhere, rooms spread over both shards, and text that survives every path."""

import asyncio
import urllib.request

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import CaptureQueriesContext

from messaging.actions import send_message
from messaging.models import Message
from messaging.queries import messages_after, messages_before
from messaging.sharding import shard_for_room
from rooms.actions import create_room, join_room
from rooms.models import Room
from tests.realstack.stack import Client, session_key_for

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True, databases="__all__")]

ALIASES = ["default", "shard_0", "shard_1"]

# Each must come back byte for byte. They hold skin-tone modifiers, ZWJ
# sequences (family, rainbow flag, people holding hands), a CJK character
# outside the Basic Multilingual Plane, Hangul and mathematical letters.
# The last has a decomposed "é" next to a composed one, because no
# normalisation may happen on the way.
TEXTS = [
    "wave 👋🏽 thumbs 👍🏿 family 👨‍👩‍👧‍👦 flag 🏳️‍🌈 pair 🧑🏿‍🤝‍🧑🏻",
    "漢字かな交じり文 𠮷野家 한국어 中文",
    "𝕄𝕒𝕥𝕙 𝒜𝒷𝒸 𝔉𝔯𝔞𝔨 ∑∫∂ √2",
    "cafe\u0301 café",
]


def stored_hex(alias: str, message_id: int) -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT HEX(body) FROM messaging_message WHERE id = %s", [message_id])
        return cursor.fetchone()[0]


def http_get(url: str, session_key: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, response.read().decode("utf-8")


def rooms_on_both_shards(owner, count: int) -> list[Room]:
    rooms = [create_room(owner, f"spread {index}") for index in range(count)]
    assert {shard_for_room(room.pk) for room in rooms} == set(settings.MESSAGE_SHARDS)
    return rooms


# Schema and connections


@pytest.mark.parametrize("alias", ALIASES)
def test_database_charset_utf8mb4(alias):
    name = settings.DATABASES[alias]["NAME"]
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT default_character_set_name, default_collation_name FROM information_schema.schemata "
            "WHERE schema_name = %s",
            [name],
        )
        charset, collation = cursor.fetchone()
    assert charset == "utf8mb4"
    assert collation == settings.DATABASES[alias]["TEST"]["COLLATION"]


@pytest.mark.parametrize("alias", ALIASES)
def test_tables_and_columns_utf8mb4(alias):
    name = settings.DATABASES[alias]["NAME"]
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT table_name, table_collation FROM information_schema.tables WHERE table_schema = %s", [name])
        tables = cursor.fetchall()
        cursor.execute(
            "SELECT table_name, column_name, character_set_name FROM information_schema.columns "
            "WHERE table_schema = %s AND character_set_name IS NOT NULL",
            [name],
        )
        columns = cursor.fetchall()
    assert len(tables) >= 3
    assert [table for table in tables if not table[1].startswith("utf8mb4_")] == []
    assert len(columns) >= 3
    assert [column for column in columns if column[2] != "utf8mb4"] == []


@pytest.mark.parametrize("alias", ALIASES)
def test_connection_utf8mb4(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, "
            "@@collation_connection, @@sql_mode, @@tx_isolation"
        )
        client, connection, results, collation, sql_mode, isolation = cursor.fetchone()
    assert (client, connection, results) == ("utf8mb4", "utf8mb4", "utf8mb4")
    assert collation == settings.DATABASES[alias]["OPTIONS"]["collation"]
    assert "STRICT_TRANS_TABLES" in sql_mode
    assert isolation == "READ-COMMITTED"


def test_emoji_distinct_in_unique_index(make_user):
    # Under utf8mb4_general_ci every emoji has the same weight, and the
    # second room name would collide with the first in the unique index.
    owner = make_user("owner")
    first = create_room(owner, "🍕")
    second = create_room(owner, "🍔")
    assert first.pk != second.pk
    assert Room.objects.filter(name__in=["🍕", "🍔"]).count() == 2


# Rooms over shards


def test_rooms_spread_over_shards(make_user):
    owner = make_user("owner")
    rooms = rooms_on_both_shards(owner, 40)
    for room in rooms:
        for number in range(3):
            send_message(owner, room.pk, f"room {room.pk} message {number}", f"m{number}")

    per_shard = {alias: Message.objects.using(alias).values_list("room_id", flat=True).distinct() for alias in settings.MESSAGE_SHARDS}
    for alias, room_ids in per_shard.items():
        assert len(set(room_ids)) >= 5, f"{alias} holds only rooms {set(room_ids)}"
    for room in rooms:
        home = shard_for_room(room.pk)
        assert Message.objects.using(home).filter(room_id=room.pk).count() == 3
        for alias in settings.MESSAGE_SHARDS:
            if alias != home:
                assert not Message.objects.using(alias).filter(room_id=room.pk).exists()


def test_history_reads_one_shard(make_user):
    owner = make_user("owner")
    rooms = rooms_on_both_shards(owner, 12)
    for room in rooms:
        send_message(owner, room.pk, f"hello {room.pk}", "h")

    for room in rooms:
        home = shard_for_room(room.pk)
        other = next(alias for alias in settings.MESSAGE_SHARDS if alias != home)
        with CaptureQueriesContext(connections[home]) as on_home, CaptureQueriesContext(connections[other]) as on_other:
            recent, _ = messages_before(room.pk, None)
            synced, _ = messages_after(room.pk, 0)
        assert [message["body"] for message in recent] == [f"hello {room.pk}"]
        assert synced == recent
        assert len(on_home.captured_queries) == 2
        assert on_other.captured_queries == []


# Text through every path


def test_text_round_trip(make_user, servers):
    sender, reader = make_user("sender"), make_user("reader")
    sender.is_staff = sender.is_superuser = True
    sender.save()
    rooms = {}
    index = 0
    while len(rooms) < len(settings.MESSAGE_SHARDS):
        room = create_room(sender, f"text {index} 🌐")
        join_room(reader, room.pk)
        rooms.setdefault(shard_for_room(room.pk), room)
        index += 1
    sender_key, reader_key = session_key_for(sender), session_key_for(reader)
    server = servers.start()

    async def exchange():
        writer = await Client.open(server, sender_key)
        listener = await Client.open(server, reader_key)
        acks = []
        for alias, room in rooms.items():
            for number, text in enumerate(TEXTS):
                ack = await writer.send_message(room.pk, text, f"{alias}-{number}")
                assert ack["type"] == "message.ack", ack
                acks.append(ack["message"])
                heard = await listener.wait_for(
                    lambda frame: frame["type"] == "message.new" and frame["message"]["id"] == ack["message"]["id"]
                )
                assert heard["message"]["body"] == text
        raw = list(listener.raw)
        await writer.close()
        await listener.close()
        return acks, raw

    acks, raw_frames = asyncio.run(exchange())

    for ack, text in zip(acks, TEXTS * len(rooms)):
        assert ack["body"] == text
        alias = shard_for_room(ack["room"])
        assert stored_hex(alias, int(ack["id"])) == text.encode("utf-8").hex().upper()
    for text in TEXTS:
        # The frame text itself carries the characters, not \\u escapes.
        assert sum(text in frame for frame in raw_frames) == len(rooms)

    for alias, room in rooms.items():
        status, page = http_get(f"{server.url}/rooms/{room.pk}/", reader_key)
        assert status == 200
        for text in TEXTS:
            assert text in page, f"room page of {alias} lacks {text!r}"
        assert "🌐" in page

        status, admin_page = http_get(f"{server.url}/admin/messaging/message/?shard={alias}", sender_key)
        assert status == 200
        for text in TEXTS:
            assert text in admin_page, f"admin list of {alias} lacks {text!r}"


def test_main_tables_not_on_shards():
    for alias in settings.MESSAGE_SHARDS:
        with connections[alias].cursor() as cursor:
            cursor.execute("SHOW TABLES")
            tables = {row[0] for row in cursor.fetchall()}
        assert "messaging_message" in tables
        assert "messaging_roomsequence" in tables
        assert "rooms_room" not in tables
        assert "accounts_user" not in tables
        assert "messaging_shardbucket" not in tables
