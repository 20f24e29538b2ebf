"""The database router and the room-to-shard mapping, checked on the real SQLite shards."""


import pytest
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from chatproject.routers import SHARD_MODELS, MessageShardRouter
from messaging.actions import send_message
from messaging.models import Message, RoomSequence, ShardBucket
from messaging.sharding import bucket_for_room, bucket_map, default_alias_for_bucket, shard_for_room
from rooms.actions import create_room
from rooms.models import Membership, Room

pytestmark = pytest.mark.usefixtures("fast_password_hasher")

ALIASES = ["default", "shard_0", "shard_1"]


@pytest.fixture(autouse=True)
def fresh_bucket_map():
    """Drop the cached bucket map before and after each test, because tests add and remove rows."""
    bucket_map.invalidate()
    yield
    bucket_map.invalidate()


def read_shard_file(alias: str, sql: str) -> list[tuple]:
    """Run raw `sql` on one shard's connection, bypassing the ORM and the router."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


def other_shard(alias: str) -> str:
    return next(shard for shard in settings.MESSAGE_SHARDS if shard != alias)


def test_settings_shard_aliases():
    assert settings.MESSAGE_SHARDS == ["shard_0", "shard_1"]
    assert list(settings.DATABASES) == ALIASES


def test_allow_migrate_every_model_and_alias():
    router = MessageShardRouter()
    models = apps.get_models(include_auto_created=True)
    labels = {model._meta.label_lower for model in models}
    assert SHARD_MODELS <= labels

    for model in models:
        on_shard_model = model._meta.label_lower in SHARD_MODELS
        for alias in ALIASES:
            allowed = router.allow_migrate(alias, model._meta.app_label, model_name=model._meta.model_name)
            expected = on_shard_model == (alias != "default")
            assert allowed is expected, f"{model._meta.label_lower} on {alias}: {allowed!r}"


def test_allow_migrate_without_model_name():
    router = MessageShardRouter()

    assert router.allow_migrate("default", "messaging") is True
    assert router.allow_migrate("default", "rooms", model_name=None) is True
    assert router.allow_migrate("shard_0", "messaging") is False
    assert router.allow_migrate("shard_1", "messaging", model_name=None) is False
    assert router.allow_migrate("shard_1", "auth") is False


@pytest.mark.django_db(databases="__all__")
def test_migrated_tables_per_alias():
    def app_tables(alias):
        names = set(connections[alias].introspection.table_names())
        return {name for name in names if name != "django_migrations"}

    default_tables = app_tables("default")
    assert "messaging_message" not in default_tables
    assert "messaging_roomsequence" not in default_tables
    assert {"messaging_shardbucket", "messaging_workerlease", "rooms_room", "accounts_user"} <= default_tables

    for alias in settings.MESSAGE_SHARDS:
        assert app_tables(alias) == {"messaging_message", "messaging_roomsequence"}, alias


def test_other_models_return_none():
    router = MessageShardRouter()
    main_models = [model for model in apps.get_models() if model._meta.label_lower not in SHARD_MODELS]
    assert Room in main_models
    assert ShardBucket in main_models

    for model in main_models:
        assert router.db_for_read(model) is None, model._meta.label
        assert router.db_for_write(model) is None, model._meta.label
        assert router.db_for_read(model, room_id=7) is None, model._meta.label
        assert router.db_for_write(model, room_id=7) is None, model._meta.label


@pytest.mark.django_db
def test_instance_hint_chooses_shard():
    router = MessageShardRouter()
    for alias in settings.MESSAGE_SHARDS:
        message = Message(id=1, room_id=1, seq=1, author_id=1, body="x", client_id="c")
        message._state.db = alias
        assert router.db_for_read(Message, instance=message) == alias
        assert router.db_for_write(Message, instance=message) == alias
        # The instance wins over a room_id hint that names another shard.
        room_on_other_shard = next(
            room_id for room_id in range(1, 1000) if shard_for_room(room_id) != alias
        )
        assert router.db_for_write(Message, instance=message, room_id=room_on_other_shard) == alias


@pytest.mark.django_db
def test_room_id_hint_chooses_shard():
    router = MessageShardRouter()
    seen = set()
    for room_id in range(1, 60):
        expected = shard_for_room(room_id)
        seen.add(expected)
        assert router.db_for_read(Message, room_id=room_id) == expected
        assert router.db_for_write(RoomSequence, room_id=room_id) == expected
    assert seen == {"shard_0", "shard_1"}


def test_missing_hint_raises():
    router = MessageShardRouter()
    unsaved = Message(id=1, room_id=1, seq=1, author_id=1, body="x", client_id="c")

    for model in (Message, RoomSequence):
        with pytest.raises(ImproperlyConfigured, match=r"lives on the message shards"):
            router.db_for_read(model)
        with pytest.raises(ImproperlyConfigured, match=r"lives on the message shards"):
            router.db_for_write(model)
    with pytest.raises(ImproperlyConfigured, match=r"messaging\.Message lives on the message shards"):
        router.db_for_write(Message, instance=unsaved)


@pytest.mark.django_db(databases="__all__")
def test_query_without_using_raises():
    with pytest.raises(ImproperlyConfigured):
        list(Message.objects.filter(room_id=1))
    with pytest.raises(ImproperlyConfigured):
        Message(id=1, room_id=1, seq=1, author_id=1, body="x", client_id="c").save()
    with pytest.raises(ImproperlyConfigured):
        RoomSequence.objects.create(room_id=1, last_seq=0)

    for alias in settings.MESSAGE_SHARDS:
        assert Message.objects.using(alias).count() == 0
        assert RoomSequence.objects.using(alias).count() == 0


@pytest.mark.django_db(databases="__all__")
def test_relations_across_databases_refused(alice, general):
    router = MessageShardRouter()
    first = Message(id=1, room_id=general.pk, seq=1, author_id=alice.pk, body="a", client_id="a")
    first._state.db = "shard_0"
    second = Message(id=2, room_id=general.pk, seq=2, author_id=alice.pk, body="b", client_id="b")
    second._state.db = "shard_0"
    elsewhere = Message(id=3, room_id=general.pk, seq=3, author_id=alice.pk, body="c", client_id="c")
    elsewhere._state.db = "shard_1"
    sequence = RoomSequence(room_id=general.pk)
    sequence._state.db = "shard_1"

    assert router.allow_relation(first, second) is True
    assert router.allow_relation(elsewhere, sequence) is True
    assert router.allow_relation(first, elsewhere) is False
    assert router.allow_relation(first, sequence) is False
    assert router.allow_relation(first, general) is False
    assert router.allow_relation(alice, first) is False
    assert router.allow_relation(alice, general) is None


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_rooms_spread_over_both_shards(alice):
    rooms = [create_room(alice, f"room {index}") for index in range(40)]
    for room in rooms:
        send_message(alice, room.pk, f"hello {room.pk}", "first")
        send_message(alice, room.pk, f"again {room.pk}", "second")

    rows_by_shard = {
        alias: read_shard_file(alias, "SELECT room_id, seq FROM messaging_message ORDER BY room_id, seq")
        for alias in settings.MESSAGE_SHARDS
    }
    sequences_by_shard = {
        alias: dict(read_shard_file(alias, "SELECT room_id, last_seq FROM messaging_roomsequence"))
        for alias in settings.MESSAGE_SHARDS
    }
    assert rows_by_shard["shard_0"], "no message landed on shard_0"
    assert rows_by_shard["shard_1"], "no message landed on shard_1"

    for room in rooms:
        expected = shard_for_room(room.pk)
        holders = [alias for alias, rows in rows_by_shard.items() if any(row[0] == room.pk for row in rows)]
        assert holders == [expected], f"room {room.pk}"
        assert [seq for room_id, seq in rows_by_shard[expected] if room_id == room.pk] == [1, 2]
        assert sequences_by_shard[expected][room.pk] == 2
        assert room.pk not in sequences_by_shard[other_shard(expected)]
    assert sum(len(rows) for rows in rows_by_shard.values()) == 80


@pytest.mark.django_db(databases="__all__")
def test_default_assignment_is_bucket_modulo_shards():
    for room_id in range(1, 200):
        bucket = bucket_for_room(room_id)
        assert 0 <= bucket < settings.MESSAGE_BUCKETS
        assert shard_for_room(room_id) == settings.MESSAGE_SHARDS[bucket % 2] == default_alias_for_bucket(bucket)


def test_bucket_for_room_fixed_values():
    # The mapping is part of the stored data layout: a changed hash would
    # look for every room's messages on the wrong shard.
    assert [bucket_for_room(room_id) for room_id in (1, 2, 3, 1000, 2**40)] == [1018, 460, 543, 343, 617]


def test_bucket_for_room_spreads_evenly():
    buckets = [bucket_for_room(room_id) for room_id in range(1, 2001)]
    on_shard_0 = sum(1 for bucket in buckets if bucket % 2 == 0)
    assert 900 <= on_shard_0 <= 1100
    assert len(set(buckets)) > 800


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_bucket_map_row_overrides_default(alice, general):
    bucket = bucket_for_room(general.pk)
    default_alias = default_alias_for_bucket(bucket)
    moved_to = other_shard(default_alias)
    assert shard_for_room(general.pk) == default_alias

    ShardBucket.objects.create(bucket=bucket, alias=moved_to)
    # Each process caches the map, so a new row applies only once the cache expires.
    assert shard_for_room(general.pk) == default_alias
    bucket_map.invalidate()
    assert shard_for_room(general.pk) == moved_to

    result = send_message(alice, general.pk, "moved", "moved-1")
    assert result.message["seq"] == 1

    query = f"SELECT id, room_id, seq, body FROM messaging_message WHERE room_id = {general.pk}"
    assert read_shard_file(moved_to, query) == [(int(result.message["id"]), general.pk, 1, "moved")]
    assert read_shard_file(default_alias, query) == []
    assert MessageShardRouter().db_for_read(Message, room_id=general.pk) == moved_to


@pytest.mark.django_db(databases="__all__")
def test_bucket_map_unknown_alias_raises(alice, general):
    bucket = bucket_for_room(general.pk)
    ShardBucket.objects.create(bucket=bucket, alias="shard_9")
    bucket_map.invalidate()

    with pytest.raises(ImproperlyConfigured) as raised:
        shard_for_room(general.pk)
    assert "'shard_9'" in str(raised.value)
    assert f"bucket {bucket}" in str(raised.value)
    assert "shard_0, shard_1" in str(raised.value)

    # A send fails with the same error before it writes anything.
    with pytest.raises(ImproperlyConfigured, match="shard_9"):
        send_message(alice, general.pk, "lost", "lost-1")
    assert Membership.objects.filter(room=general).count() == 2
    for alias in settings.MESSAGE_SHARDS:
        assert Message.objects.using(alias).count() == 0


@pytest.mark.django_db(databases="__all__")
def test_bucket_beyond_count_rejected(settings):
    ShardBucket.objects.create(bucket=settings.MESSAGE_BUCKETS, alias="shard_0")
    bucket_map.invalidate()

    with pytest.raises(ImproperlyConfigured, match="MESSAGE_BUCKETS"):
        shard_for_room(1)

    ShardBucket.objects.all().delete()
    bucket_map.invalidate()
