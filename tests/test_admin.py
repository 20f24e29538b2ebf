import pytest
from django.conf import settings

from messaging.actions import send_message
from messaging.models import Message
from messaging.sharding import shard_for_room
from rooms.actions import create_room
from rooms.models import Membership, Room

pytestmark = pytest.mark.django_db(databases="__all__")

BODIES = ["family 👨‍👩‍👧‍👦 thumbs 👍🏾", "漢字かな交じり", "𝓜𝓪𝓽𝓱 𝔽𝕣𝕒𝕜", "<b>not bold</b>"]


@pytest.fixture
def rooms_on_each_shard(alice):
    """Create rooms until every shard holds one; return {alias: room}."""
    found = {}
    index = 0
    while len(found) < len(settings.MESSAGE_SHARDS):
        room = create_room(alice, f"room {index}", Room.Kind.PUBLIC)
        found.setdefault(shard_for_room(room.pk), room)
        index += 1
    return found


def test_message_list_per_shard(admin_client, alice, rooms_on_each_shard):
    for alias, room in rooms_on_each_shard.items():
        for number, body in enumerate(BODIES):
            send_message(alice, room.pk, body, f"{alias}-{number}")

    for alias, room in rooms_on_each_shard.items():
        response = admin_client.get("/admin/messaging/message/", {"shard": alias})
        assert response.status_code == 200
        html = response.content.decode()
        assert "family 👨‍👩‍👧‍👦 thumbs 👍🏾" in html
        assert "𝓜𝓪𝓽𝓱 𝔽𝕣𝕒𝕜" in html
        assert "&lt;b&gt;not bold&lt;/b&gt;" in html
        assert "<b>not bold</b>" not in html
        assert f"{alias}-0" not in html  # client ids are not listed
        shown = response.context["cl"].result_list
        assert {message.room_id for message in shown} == {room.pk}


def test_message_list_by_room(admin_client, alice, rooms_on_each_shard):
    rooms = list(rooms_on_each_shard.values())
    send_message(alice, rooms[0].pk, "first room", "a")
    send_message(alice, rooms[1].pk, "second room", "b")

    response = admin_client.get("/admin/messaging/message/", {"room": str(rooms[1].pk)})

    assert response.status_code == 200
    assert [message.body for message in response.context["cl"].result_list] == ["second room"]


def test_message_detail_found_on_its_shard(admin_client, alice, rooms_on_each_shard):
    for alias, room in rooms_on_each_shard.items():
        sent = send_message(alice, room.pk, BODIES[0], "detail")
        response = admin_client.get(f"/admin/messaging/message/{sent.message['id']}/change/")
        assert response.status_code == 200
        assert BODIES[0] in response.content.decode()


def test_message_admin_read_only(admin_client, alice, general):
    sent = send_message(alice, general.pk, "keep me", "ro")
    message_id = sent.message["id"]

    assert admin_client.get("/admin/messaging/message/add/").status_code == 403
    response = admin_client.post(f"/admin/messaging/message/{message_id}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Message.objects.using(shard_for_room(general.pk)).filter(pk=int(message_id)).exists()


def test_unknown_message_id_redirects(admin_client):
    response = admin_client.get("/admin/messaging/message/12345/change/")
    assert response.status_code == 302


def test_room_admin_lists_rooms(admin_client, general):
    response = admin_client.get("/admin/rooms/room/")
    assert response.status_code == 200
    assert "general" in response.content.decode()
    assert admin_client.get(f"/admin/rooms/room/{general.pk}/change/").status_code == 200


def test_membership_admin_delete(admin_client, general, bob):
    membership = Membership.objects.get(room=general, user=bob)
    response = admin_client.post(f"/admin/rooms/membership/{membership.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
