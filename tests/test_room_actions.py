"""Room actions: create, join, leave, direct rooms and member management."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from chatproject.errors import ChatError
from messaging.actions import send_message
from rooms.actions import (
    add_member,
    create_room,
    join_room,
    leave_room,
    open_direct_room,
    remove_member,
)
from rooms.models import Membership, Room
from tests.conftest import stored_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hasher")]


def roles(room: Room) -> dict[str, str]:
    return {membership.user.username: membership.role for membership in room.memberships.select_related("user")}


def raise_code(call, *args, **kwargs) -> ChatError:
    with pytest.raises(ChatError) as raised:
        call(*args, **kwargs)
    return raised.value


@pytest.fixture
def dave(make_user):
    return make_user("dave")


@pytest.fixture
def erin(make_user):
    return make_user("erin")


# Create


def test_create_makes_owner(alice):
    room = create_room(alice, "  Design   review ", Room.Kind.PRIVATE, "  Weekly  ")

    room.refresh_from_db()
    assert (room.name, room.kind, room.topic, room.created_by_id) == ("Design review", "private", "Weekly", alice.pk)
    assert room.name_key == "design review"
    assert room.direct_key is None
    assert roles(room) == {"alice": "owner"}


@pytest.mark.parametrize("name", ["general", "GENERAL", "General", "  general ", "GENERAL\t"])
def test_create_duplicate_name_conflict(alice, bob, general, name):
    error = raise_code(create_room, bob, name)

    assert error.code == "conflict"
    assert error.extra == {"field": "name"}
    assert Room.objects.count() == 1
    assert roles(general) == {"alice": "owner", "bob": "member"}


def test_create_duplicate_across_kinds(alice, bob, general):
    error = raise_code(create_room, bob, "General", Room.Kind.PRIVATE)
    assert error.code == "conflict"
    assert Room.objects.count() == 1


def test_create_casefold_conflict(alice, bob):
    create_room(alice, "Straße")
    error = raise_code(create_room, bob, "STRASSE")
    assert error.code == "conflict"
    assert Room.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("", "The room name is empty."),
        ("   \n\t", "The room name is empty."),
        ("x" * 81, "The room name is longer than 80 characters."),
        (None, "The room name must be a string."),
        (42, "The room name must be a string."),
        (["general"], "The room name must be a string."),
    ],
    ids=["empty", "whitespace", "81-chars", "none", "number", "list"],
)
def test_create_invalid_name(alice, name, detail):
    error = raise_code(create_room, alice, name)

    assert (error.code, error.detail, error.extra) == ("invalid_input", detail, {"field": "name"})
    assert Room.objects.count() == 0
    assert Membership.objects.count() == 0


def test_create_name_at_limit(alice):
    assert create_room(alice, "x" * 80).name == "x" * 80


@pytest.mark.parametrize("kind", ["direct", "PUBLIC", "secret", "", None, 1])
def test_create_invalid_kind(alice, kind):
    error = raise_code(create_room, alice, "room", kind)

    assert (error.code, error.extra) == ("invalid_input", {"field": "kind"})
    assert Room.objects.count() == 0
    assert Membership.objects.count() == 0


@pytest.mark.parametrize("topic", ["x" * 251, 5, ["topic"]], ids=["251-chars", "number", "list"])
def test_create_invalid_topic(alice, topic):
    error = raise_code(create_room, alice, "room", Room.Kind.PUBLIC, topic)

    assert (error.code, error.extra) == ("invalid_input", {"field": "topic"})
    assert Room.objects.count() == 0


# Join


def test_join_public(alice, carol, general):
    membership = join_room(carol, general.pk)

    assert (membership.room_id, membership.user_id, membership.role) == (general.pk, carol.pk, "member")
    assert roles(general) == {"alice": "owner", "bob": "member", "carol": "member"}


def test_join_twice_idempotent(alice, carol, general):
    first = join_room(carol, general.pk)
    second = join_room(carol, general.pk)

    assert second.pk == first.pk
    assert Membership.objects.filter(room=general, user=carol).count() == 1


def test_join_keeps_owner_role(alice, general):
    assert join_room(alice, general.pk).role == "owner"
    assert roles(general)["alice"] == "owner"


def test_join_private_not_found(alice, carol):
    secret = create_room(alice, "secret", Room.Kind.PRIVATE)

    error = raise_code(join_room, carol, secret.pk)

    assert (error.code, error.extra) == ("room_not_found", {"room": secret.pk})
    assert error.status == 404
    assert not Membership.objects.filter(user=carol).exists()


def test_join_private_member_returns_membership(alice):
    secret = create_room(alice, "secret", Room.Kind.PRIVATE)
    assert join_room(alice, secret.pk).role == "owner"


def test_join_direct_not_found(alice, bob, carol):
    direct = open_direct_room(alice, "bob")

    error = raise_code(join_room, carol, direct.pk)

    assert error.code == "room_not_found"
    assert not Membership.objects.filter(user=carol).exists()


@pytest.mark.parametrize("room_id", [987654, 0, -3])
def test_join_missing_not_found(carol, room_id):
    error = raise_code(join_room, carol, room_id)

    assert (error.code, error.extra) == ("room_not_found", {"room": room_id})
    assert Membership.objects.count() == 0


# Leave


def test_leave_and_leave_again(alice, bob, general):
    leave_room(bob, general.pk)
    leave_room(bob, general.pk)

    assert roles(general) == {"alice": "owner"}


def test_leave_room_never_joined(alice, carol, general):
    leave_room(carol, general.pk)
    leave_room(carol, 987654)
    assert roles(general) == {"alice": "owner", "bob": "member"}


def test_last_owner_leaving_promotes_admin(alice, bob, carol, dave, general):
    join_room(carol, general.pk)
    add_member(alice, general.pk, "dave", Membership.Role.ADMIN)

    leave_room(alice, general.pk)

    # dave joined after bob and carol, but an admin comes before members.
    assert roles(general) == {"bob": "member", "carol": "member", "dave": "owner"}


def test_last_owner_leaving_promotes_earliest_member(alice, bob, carol, dave, general):
    join_room(carol, general.pk)
    join_room(dave, general.pk)

    leave_room(alice, general.pk)

    assert roles(general) == {"bob": "owner", "carol": "member", "dave": "member"}


def test_earliest_admin_promoted(alice, bob, carol, dave, general):
    add_member(alice, general.pk, "carol", Membership.Role.ADMIN)
    add_member(alice, general.pk, "dave", Membership.Role.ADMIN)

    leave_room(alice, general.pk)

    assert roles(general) == {"bob": "member", "carol": "owner", "dave": "admin"}


def test_owner_leaving_with_other_owner(alice, bob, carol, general):
    Membership.objects.filter(room=general, user=bob).update(role=Membership.Role.OWNER)
    join_room(carol, general.pk)

    leave_room(alice, general.pk)

    assert roles(general) == {"bob": "owner", "carol": "member"}


def test_last_member_leaving_empties_room(alice):
    room = create_room(alice, "solo")
    leave_room(alice, room.pk)

    assert Room.objects.filter(pk=room.pk).exists()
    assert roles(room) == {}


# Direct rooms


def test_direct_room_one_per_pair(alice, bob):
    first = open_direct_room(alice, "bob")
    second = open_direct_room(bob, "alice")
    third = open_direct_room(alice, " bob ")

    assert first.pk == second.pk == third.pk
    assert Room.objects.filter(kind=Room.Kind.DIRECT).count() == 1
    first.refresh_from_db()
    assert first.direct_key == f"{alice.pk}:{bob.pk}"
    assert first.name_key is None
    assert roles(first) == {"alice": "member", "bob": "member"}


@pytest.mark.django_db(transaction=True)
def test_direct_room_opened_concurrently(alice, bob):
    start = threading.Barrier(4)

    def open_from(user, username):
        try:
            start.wait()
            return open_direct_room(user, username).pk
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(open_from, *pair) for pair in [(alice, "bob"), (bob, "alice")] * 2]
        room_ids = {future.result(timeout=60) for future in futures}

    assert len(room_ids) == 1
    assert Room.objects.filter(kind=Room.Kind.DIRECT).count() == 1
    assert roles(Room.objects.get()) == {"alice": "member", "bob": "member"}


def test_direct_rooms_per_pair_distinct(alice, bob, carol):
    with_bob = open_direct_room(alice, "bob")
    with_carol = open_direct_room(alice, "carol")
    between_others = open_direct_room(bob, "carol")

    assert len({with_bob.pk, with_carol.pk, between_others.pk}) == 3


def test_direct_room_cannot_leave(alice, bob):
    direct = open_direct_room(alice, "bob")

    error = raise_code(leave_room, alice, direct.pk)

    assert (error.code, error.extra) == ("forbidden", {"room": direct.pk})
    assert roles(direct) == {"alice": "member", "bob": "member"}


def test_direct_room_with_yourself(alice):
    error = raise_code(open_direct_room, alice, "alice")

    assert (error.code, error.extra) == ("invalid_input", {"field": "username"})
    assert Room.objects.count() == 0


@pytest.mark.parametrize("username", ["nobody", "", "   ", None, 7])
def test_direct_room_unknown_user(alice, username):
    error = raise_code(open_direct_room, alice, username)

    assert (error.code, error.extra) == ("invalid_input", {"field": "username"})
    assert Room.objects.count() == 0


def test_direct_room_inactive_user(alice, bob):
    bob.is_active = False
    bob.save()

    error = raise_code(open_direct_room, alice, "bob")

    assert error.code == "invalid_input"
    assert Room.objects.count() == 0


def test_direct_room_members_fixed(alice, bob, carol):
    direct = open_direct_room(alice, "bob")
    Membership.objects.filter(room=direct, user=alice).update(role=Membership.Role.OWNER)

    assert raise_code(add_member, alice, direct.pk, "carol").code == "forbidden"
    assert raise_code(remove_member, alice, direct.pk, bob.pk).code == "forbidden"
    assert roles(direct) == {"alice": "owner", "bob": "member"}


# Add and remove members


def test_owner_adds_to_private_room(alice, bob):
    secret = create_room(alice, "secret", Room.Kind.PRIVATE)

    membership = add_member(alice, secret.pk, "bob")
    again = add_member(alice, secret.pk, "bob", Membership.Role.ADMIN)

    assert membership.role == "member"
    assert again.pk == membership.pk
    assert roles(secret) == {"alice": "owner", "bob": "member"}


def test_admin_adds_members(alice, bob, carol, dave, erin, general):
    add_member(alice, general.pk, "carol", Membership.Role.ADMIN)

    add_member(carol, general.pk, "dave")
    add_member(carol, general.pk, "erin", Membership.Role.ADMIN)

    assert roles(general) == {"alice": "owner", "bob": "member", "carol": "admin", "dave": "member", "erin": "admin"}


def test_member_cannot_add(alice, bob, carol, general):
    error = raise_code(add_member, bob, general.pk, "carol")

    assert (error.code, error.extra) == ("forbidden", {"room": general.pk})
    assert not Membership.objects.filter(user=carol).exists()


def test_outsider_cannot_add(alice, carol, dave, general):
    error = raise_code(add_member, carol, general.pk, "dave")

    assert (error.code, error.extra) == ("not_member", {"room": general.pk})
    assert not Membership.objects.filter(user__in=[carol, dave]).exists()


@pytest.mark.parametrize("role", ["owner", "OWNER", "", None])
def test_add_with_invalid_role(alice, carol, general, role):
    error = raise_code(add_member, alice, general.pk, "carol", role)

    assert (error.code, error.extra) == ("invalid_input", {"field": "role"})
    assert not Membership.objects.filter(user=carol).exists()


def test_add_unknown_user(alice, general):
    error = raise_code(add_member, alice, general.pk, "nobody")

    assert (error.code, error.extra) == ("invalid_input", {"field": "username"})
    assert Membership.objects.filter(room=general).count() == 2


def test_member_cannot_remove(alice, bob, carol, general):
    join_room(carol, general.pk)

    error = raise_code(remove_member, bob, general.pk, carol.pk)

    assert error.code == "forbidden"
    assert roles(general) == {"alice": "owner", "bob": "member", "carol": "member"}


def test_admin_removes_member(alice, bob, carol, general):
    add_member(alice, general.pk, "carol", Membership.Role.ADMIN)

    remove_member(carol, general.pk, bob.pk)

    assert roles(general) == {"alice": "owner", "carol": "admin"}


def test_admin_cannot_remove_owner_or_admin(alice, bob, carol, dave, general):
    add_member(alice, general.pk, "carol", Membership.Role.ADMIN)
    add_member(alice, general.pk, "dave", Membership.Role.ADMIN)

    on_owner = raise_code(remove_member, carol, general.pk, alice.pk)
    on_admin = raise_code(remove_member, carol, general.pk, dave.pk)

    assert (on_owner.code, on_admin.code) == ("forbidden", "forbidden")
    assert roles(general) == {"alice": "owner", "bob": "member", "carol": "admin", "dave": "admin"}


def test_owner_removes_admin(alice, bob, carol, general):
    add_member(alice, general.pk, "carol", Membership.Role.ADMIN)

    remove_member(alice, general.pk, carol.pk)

    assert roles(general) == {"alice": "owner", "bob": "member"}


def test_remove_self_rejected(alice, general):
    error = raise_code(remove_member, alice, general.pk, alice.pk)

    assert (error.code, error.extra) == ("invalid_input", {"field": "user"})
    assert roles(general)["alice"] == "owner"


def test_remove_non_member_no_op(alice, carol, general):
    remove_member(alice, general.pk, carol.pk)
    assert roles(general) == {"alice": "owner", "bob": "member"}


@pytest.mark.django_db(databases="__all__")
def test_removed_member_cannot_send(alice, bob, general):
    send_message(bob, general.pk, "before", "b1")

    remove_member(alice, general.pk, bob.pk)

    error = raise_code(send_message, bob, general.pk, "after", "b2")
    assert (error.code, error.extra) == ("not_member", {"room": general.pk})
    assert [(row.seq, row.body) for row in stored_messages()] == [(1, "before")]


@pytest.mark.django_db(databases="__all__")
def test_left_member_cannot_send(alice, bob, general):
    leave_room(bob, general.pk)

    error = raise_code(send_message, bob, general.pk, "after", "b1")

    assert error.code == "not_member"
    assert stored_messages() == []


# Names that hide what they are


@pytest.mark.parametrize(
    "name",
    ["\u200b", "gen\u200beral", "\u202egnp.exe", "tab\x07bell", "zero\ufeffwidth"],
    ids=["zero-width-only", "zero-width-inside", "bidi-override", "control", "byte-order-mark"],
)
def test_create_rejects_invisible_characters(alice, name):
    with pytest.raises(ChatError) as raised:
        create_room(alice, name)

    assert raised.value.code == "invalid_input"
    assert raised.value.extra == {"field": "name"}
    assert not Room.objects.exists()


def test_create_accepts_visible_unicode(alice):
    room = create_room(alice, "café 漢字 𝓜 👩🏽‍💻")
    assert room.name == "café 漢字 𝓜 👩🏽‍💻"


# A room everyone left


def test_join_empty_room_becomes_owner(alice, bob, carol, general):
    leave_room(alice, general.pk)
    leave_room(Membership.objects.get(room=general, role=Membership.Role.OWNER).user, general.pk)
    assert not Membership.objects.filter(room=general).exists()

    membership = join_room(carol, general.pk)

    assert membership.role == Membership.Role.OWNER
    later = join_room(alice, general.pk)
    assert later.role == Membership.Role.MEMBER


# Usernames are matched regardless of case


def test_add_member_username_any_case(alice, carol, general):
    membership = add_member(alice, general.pk, "CaRoL")
    assert membership.user == carol


def test_direct_room_username_any_case(alice, bob):
    assert open_direct_room(alice, "BOB") == open_direct_room(bob, "alice")
