"""Room actions: create, join, leave, add and remove members, direct rooms.

Pages, the REST API and the WebSocket consumer all call these functions, so
each rule lives here once. Every change of membership is published to the
affected user's open sockets through the channel layer after the
transaction commits, and each socket then subscribes to or drops the room.
"""

import logging
import unicodedata

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from chatproject.errors import Conflict, Forbidden, InvalidInput, NotMember, RoomNotFound
from chatproject.realtime import publish_to_user
from rooms.models import Membership, Room

logger = logging.getLogger(__name__)

MAX_ROOM_NAME_LENGTH = 80
MAX_TOPIC_LENGTH = 250
CREATABLE_KINDS = (Room.Kind.PUBLIC, Room.Kind.PRIVATE)


def notify_joined(user_id: int, room_id: int) -> None:
    publish_to_user(user_id, {"type": "membership.joined", "room": room_id}, using="default")


def notify_left(user_id: int, room_id: int) -> None:
    publish_to_user(user_id, {"type": "membership.left", "room": room_id}, using="default")


# Format characters that real text needs: the zero-width joiner and
# non-joiner (emoji sequences such as 👩🏽‍💻, Persian and Indic scripts) and
# the tag characters of subdivision flags.
ALLOWED_FORMAT_CHARACTERS = frozenset({"\u200c", "\u200d"} | {chr(code) for code in range(0xE0020, 0xE0080)})


def has_invisible_characters(text: str) -> bool:
    """Return True if `text` has control characters or stray format characters.

    Format characters (Unicode category Cf) include zero-width spaces and
    bidirectional overrides, which make a name look empty or display as
    another name ("\u202egnp.exe" shows as "exe.png").
    """
    return any(
        unicodedata.category(character) == "Cc"
        or (unicodedata.category(character) == "Cf" and character not in ALLOWED_FORMAT_CHARACTERS)
        for character in text
    )


def clean_room_name(name) -> str:
    if not isinstance(name, str):
        raise InvalidInput(_("The room name must be a string."), field="name")
    name = " ".join(name.split())
    if not name:
        raise InvalidInput(_("The room name is empty."), field="name")
    if has_invisible_characters(name):
        raise InvalidInput(
            _("The room name contains invisible or control characters; use visible text only."), field="name"
        )
    if len(name) > MAX_ROOM_NAME_LENGTH:
        raise InvalidInput(
            _("The room name is longer than %(max)d characters.") % {"max": MAX_ROOM_NAME_LENGTH}, field="name"
        )
    return name


def clean_topic(topic) -> str:
    if topic is None:
        return ""
    if not isinstance(topic, str):
        raise InvalidInput(_("The topic must be a string."), field="topic")
    topic = topic.strip()
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidInput(
            _("The topic is longer than %(max)d characters.") % {"max": MAX_TOPIC_LENGTH}, field="topic"
        )
    return topic


def create_room(creator, name, kind=Room.Kind.PUBLIC, topic="") -> Room:
    """Create a public or private room with `creator` as its owner."""
    name = clean_room_name(name)
    topic = clean_topic(topic)
    if kind not in CREATABLE_KINDS:
        raise InvalidInput(_("The room kind must be public or private."), field="kind")
    try:
        with transaction.atomic():
            room = Room.objects.create(name=name, kind=kind, topic=topic, created_by=creator)
            Membership.objects.create(room=room, user=creator, role=Membership.Role.OWNER)
            notify_joined(creator.pk, room.pk)
    except IntegrityError:
        raise Conflict(_("A room named “%(name)s” already exists.") % {"name": name}, field="name") from None
    logger.info("User %s created %s room %s", creator.pk, kind, room.pk)
    return room


def join_room(user, room_id) -> Membership:
    """Join a public room; joining a room twice returns the same membership."""
    room = Room.objects.filter(pk=room_id).first()
    if room is None or room.kind != Room.Kind.PUBLIC:
        # A private room is reported as missing so its existence stays hidden.
        existing = Membership.objects.filter(room_id=room_id, user_id=user.pk).first()
        if existing is not None:
            return existing
        raise RoomNotFound(room=room_id)
    with transaction.atomic():
        # Lock the room so two people joining an ownerless room do not both
        # become its owner.
        Room.objects.select_for_update().filter(pk=room.pk).first()
        membership, created = Membership.objects.get_or_create(
            room=room, user=user, defaults={"role": Membership.Role.MEMBER}
        )
        if created:
            if not room.memberships.filter(role=Membership.Role.OWNER).exists():
                # Everyone left, so the room had no one to manage it.
                membership.role = Membership.Role.OWNER
                membership.save(update_fields=["role"])
            notify_joined(user.pk, room.pk)
    return membership


def _promote_successor(room: Room) -> None:
    """Give the room a new owner when its last owner leaves.

    The longest-standing admin takes over, or else the longest-standing
    member, as Mattermost does with channel admins.
    """
    if room.memberships.filter(role=Membership.Role.OWNER).exists():
        return
    successor = (
        # "admin" sorts before "member", then the earliest to join wins.
        room.memberships.select_for_update().order_by("role", "joined_at", "id").first()
    )
    if successor is not None:
        successor.role = Membership.Role.OWNER
        successor.save(update_fields=["role"])


def leave_room(user, room_id) -> None:
    """Leave a public or private room; leaving a room twice is not an error."""
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update().select_related("room").filter(room_id=room_id, user_id=user.pk).first()
        )
        if membership is None:
            return
        if membership.room.kind == Room.Kind.DIRECT:
            raise Forbidden(_("You cannot leave a direct conversation."), room=room_id)
        membership.delete()
        _promote_successor(membership.room)
        notify_left(user.pk, membership.room_id)
    logger.info("User %s left room %s", user.pk, room_id)


def _manager_membership(actor, room_id) -> Membership:
    membership = Membership.objects.select_related("room").filter(room_id=room_id, user_id=actor.pk).first()
    if membership is None:
        raise NotMember(room=room_id)
    if not membership.can_manage:
        raise Forbidden(_("Only the room's owners and admins can manage its members."), room=room_id)
    if membership.room.kind == Room.Kind.DIRECT:
        raise Forbidden(_("The members of a direct conversation cannot change."), room=room_id)
    return membership


def _find_user(username):
    User = get_user_model()
    if not isinstance(username, str) or not username.strip():
        raise InvalidInput(_("A username is required."), field="username")
    # Case-insensitive, as sign-up rejects names that differ only in case.
    user = User.objects.filter(username__iexact=username.strip(), is_active=True).first()
    if user is None:
        raise InvalidInput(_("No active user is named “%(name)s”.") % {"name": username.strip()}, field="username")
    return user


def add_member(actor, room_id, username, role=Membership.Role.MEMBER) -> Membership:
    """Add a user to a room the actor manages (the way into a private room)."""
    actor_membership = _manager_membership(actor, room_id)
    if role not in (Membership.Role.MEMBER, Membership.Role.ADMIN):
        raise InvalidInput(_("The role must be member or admin."), field="role")
    user = _find_user(username)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            room=actor_membership.room, user=user, defaults={"role": role}
        )
        if created:
            notify_joined(user.pk, room_id)
    if created:
        logger.info("User %s added user %s to room %s", actor.pk, user.pk, room_id)
    return membership


def remove_member(actor, room_id, user_id) -> None:
    """Remove a member; only an owner may remove an admin or another owner."""
    actor_membership = _manager_membership(actor, room_id)
    with transaction.atomic():
        target = Membership.objects.select_for_update().filter(room_id=room_id, user_id=user_id).first()
        if target is None:
            return
        if target.user_id == actor.pk:
            raise InvalidInput(_("Use leave to remove yourself from a room."), field="user")
        if target.can_manage and actor_membership.role != Membership.Role.OWNER:
            raise Forbidden(_("Only an owner can remove an owner or an admin."), room=room_id)
        target.delete()
        notify_left(target.user_id, room_id)
    logger.info("User %s removed user %s from room %s", actor.pk, user_id, room_id)


def direct_key_for(user_ids) -> str:
    return ":".join(str(user_id) for user_id in sorted(set(user_ids)))


def open_direct_room(user, username) -> Room:
    """Return the direct room between `user` and `username`, creating it once."""
    other = _find_user(username)
    if other.pk == user.pk:
        raise InvalidInput(_("You cannot open a direct conversation with yourself."), field="username")
    key = direct_key_for([user.pk, other.pk])
    existing = Room.objects.filter(kind=Room.Kind.DIRECT, direct_key=key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            room = Room.objects.create(
                name=f"{user.username}, {other.username}", kind=Room.Kind.DIRECT, direct_key=key, created_by=user
            )
            for member in (user, other):
                Membership.objects.create(room=room, user=member, role=Membership.Role.MEMBER)
                notify_joined(member.pk, room.pk)
    except IntegrityError:
        # Both people opened the conversation at the same moment.
        return Room.objects.get(kind=Room.Kind.DIRECT, direct_key=key)
    return room
