"""The cached most recent page of a room stays exact as the room changes."""

import pytest
from django.core.cache import caches
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from messaging.actions import send_message
from messaging.queries import messages_before, recent_page
from messaging.sharding import shard_for_room

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.usefixtures("fast_password_hasher")]


def shard_queries(room_id) -> tuple[tuple, int]:
    with CaptureQueriesContext(connections[shard_for_room(room_id)]) as captured:
        page = recent_page(room_id)
    return page, len(captured)


def test_second_read_cached(alice, general):
    for number in range(3):
        send_message(alice, general.pk, f"m{number}", f"c{number}")

    first, first_queries = shard_queries(general.pk)
    second, second_queries = shard_queries(general.pk)

    assert first == second == messages_before(general.pk, None)
    assert [message["body"] for message in first[0]] == ["m0", "m1", "m2"]
    # The cached read costs only the last_seq lookup.
    assert second_queries == 1
    assert first_queries == 2


def test_new_message_shows(alice, bob, general):
    send_message(alice, general.pk, "first", "c1")
    recent_page(general.pk)

    send_message(bob, general.pk, "second", "c2")

    page, has_more = recent_page(general.pk)
    assert [message["body"] for message in page] == ["first", "second"]
    assert has_more is False


def test_display_name_change_shows(alice, general):
    send_message(alice, general.pk, "hello", "c1")
    assert recent_page(general.pk)[0][0]["author"]["display_name"] == "Alice"

    alice.display_name = "Alice Liddell"
    alice.save()

    assert recent_page(general.pk)[0][0]["author"]["display_name"] == "Alice Liddell"


def test_unreachable_cache_reads_database(alice, general):
    send_message(alice, general.pk, "hello", "c1")
    unreachable = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}

    with override_settings(CACHES=unreachable):
        caches.close_all()
        page, _ = recent_page(general.pk)
    caches.close_all()

    assert [message["body"] for message in page] == ["hello"]
