"""The membership cache answers sends and syncs, and every change invalidates it."""

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from chatproject.errors import ChatError
from messaging.actions import send_message
from rooms.access import is_member
from rooms.actions import add_member, join_room, leave_room, remove_member
from rooms.membership_cache import cached_role
from rooms.models import Membership

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.usefixtures("fast_password_hasher")]


def membership_queries(user_id, room_id) -> int:
    with CaptureQueriesContext(connections["default"]) as captured:
        cached_role(user_id, room_id)
    return len([query for query in captured.captured_queries if "rooms_membership" in query["sql"]])


def test_second_lookup_is_cached(bob, general):
    assert membership_queries(bob.pk, general.pk) == 1
    assert membership_queries(bob.pk, general.pk) == 0
    assert cached_role(bob.pk, general.pk) == "member"


def test_non_member_is_cached(carol, general):
    assert membership_queries(carol.pk, general.pk) == 1
    assert membership_queries(carol.pk, general.pk) == 0
    assert cached_role(carol.pk, general.pk) is None


def test_join_invalidates(carol, general):
    assert not is_member(carol.pk, general.pk)

    join_room(carol, general.pk)

    assert is_member(carol.pk, general.pk)


def test_leave_invalidates(bob, general):
    assert is_member(bob.pk, general.pk)

    leave_room(bob, general.pk)

    assert not is_member(bob.pk, general.pk)
    with pytest.raises(ChatError) as raised:
        send_message(bob, general.pk, "after leaving", "c1")
    assert raised.value.code == "not_member"


def test_remove_invalidates(alice, bob, general):
    assert is_member(bob.pk, general.pk)

    remove_member(alice, general.pk, bob.pk)

    assert not is_member(bob.pk, general.pk)


def test_add_invalidates(alice, carol, general):
    assert not is_member(carol.pk, general.pk)

    add_member(alice, general.pk, "carol", role=Membership.Role.ADMIN)

    assert cached_role(carol.pk, general.pk) == "admin"


def test_direct_orm_delete_invalidates(bob, general):
    assert is_member(bob.pk, general.pk)

    # Admin deletions and cascades go through the ORM and its signals.
    Membership.objects.filter(room=general, user=bob).delete()

    assert not is_member(bob.pk, general.pk)


def test_room_delete_invalidates(alice, bob, general):
    room_id = general.pk
    assert is_member(bob.pk, room_id)

    general.delete()

    assert not is_member(bob.pk, room_id)
    assert not is_member(alice.pk, room_id)


def test_role_change_invalidates(alice, bob, general):
    assert cached_role(bob.pk, general.pk) == "member"
    membership = Membership.objects.get(room=general, user=bob)

    membership.role = Membership.Role.ADMIN
    membership.save(update_fields=["role"])

    assert cached_role(bob.pk, general.pk) == "admin"
