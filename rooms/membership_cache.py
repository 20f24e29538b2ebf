"""Cached membership lookups, used on every send and sync frame.

The cache (Redis in production, so shared by every process) stores each
(room, user) pair's role, or "" for "not a member", for
MEMBERSHIP_CACHE_SECONDS. Every change to a Membership row deletes its
entry, both at once and again after the transaction commits, so a reader
that refilled the entry from the old row before the commit cannot keep a
stale answer. A cache that fails counts as a miss: the database answers.

Membership rows changed with QuerySet.update() or bulk operations send no
signal; such code must call invalidate_membership itself.
"""

import logging

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from rooms.models import Membership

logger = logging.getLogger(__name__)

MEMBERSHIP_CACHE_SECONDS = 300
NOT_A_MEMBER = ""


def membership_key(room_id: int, user_id: int) -> str:
    return f"membership:{int(room_id)}:{int(user_id)}"


def cached_role(user_id: int, room_id: int) -> str | None:
    """Return the user's role in the room, or None if not a member."""
    key = membership_key(room_id, user_id)
    try:
        role = cache.get(key)
    except Exception as error:
        logger.warning("Membership cache read failed: %s", error)
        role = None
    if role is None:
        role = (
            Membership.objects.filter(room_id=room_id, user_id=user_id).values_list("role", flat=True).first()
            or NOT_A_MEMBER
        )
        try:
            cache.set(key, role, MEMBERSHIP_CACHE_SECONDS)
        except Exception as error:
            logger.warning("Membership cache write failed: %s", error)
    return role or None


def invalidate_membership(room_id: int, user_id: int) -> None:
    key = membership_key(room_id, user_id)

    def delete():
        try:
            cache.delete(key)
        except Exception as error:
            # NOTE: the entry then lives until it expires
            # (MEMBERSHIP_CACHE_SECONDS); revalidation and the send-time
            # check share this cache, so a removed member may send until then.
            logger.warning("Membership cache delete for %s failed: %s", key, error)

    delete()
    transaction.on_commit(delete, using="default")


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def _membership_changed(sender, instance, **kwargs):
    invalidate_membership(instance.room_id, instance.user_id)
