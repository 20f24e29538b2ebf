"""Fetch a room and authorise the user in one step.

Nothing else looks a room up from user input, so a page, an API view and
the WebSocket consumer all apply the same rule: a room you cannot see is
reported the same way as one that does not exist.
"""

from chatproject.errors import NotMember, RoomNotFound
from rooms.models import Membership, Room


def access_room_for_viewer(user, room_id) -> tuple[Room, Membership | None]:
    """Return (room, membership or None) for a room the user may look at.

    Public rooms are visible to every signed-in user; private and direct
    rooms only to their members.
    """
    room = Room.objects.filter(pk=room_id).first()
    if room is None:
        raise RoomNotFound(room=room_id)
    membership = Membership.objects.filter(room=room, user_id=user.pk).first()
    if membership is None and room.kind != Room.Kind.PUBLIC:
        raise RoomNotFound(room=room_id)
    return room, membership


def is_member(user_id: int, room_id: int) -> bool:
    """Return whether the user is in the room, from the membership cache."""
    from rooms.membership_cache import cached_role

    return cached_role(user_id, room_id) is not None


def require_member(user, room_id) -> None:
    """Raise NotMember unless `user` is a member, reading the membership cache."""
    if not is_member(user.pk, room_id):
        raise NotMember(room=room_id)
