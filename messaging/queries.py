"""Read paths for messages: history pages, sync batches and room summaries.

Every read names the room's shard explicitly; a room's history is always
read from one shard.
"""

import logging
from collections import defaultdict

from django.core.cache import cache
from django.db import DatabaseError

from messaging.models import Message
from messaging.payloads import message_dicts
from messaging.sequences import last_seqs
from messaging.sharding import shard_for_room

MAX_SYNC_BATCH = 200
DEFAULT_SYNC_BATCH = 100
RECENT_PAGE_SIZE = 50

logger = logging.getLogger(__name__)


def messages_after(room_id: int, after_seq: int, limit: int = DEFAULT_SYNC_BATCH) -> tuple[list[dict], bool]:
    """Return (messages with seq > after_seq in order, has_more)."""
    limit = max(1, min(limit, MAX_SYNC_BATCH))
    rows = list(
        Message.objects.using(shard_for_room(room_id))
        .filter(room_id=room_id, seq__gt=after_seq)
        .order_by("seq")[: limit + 1]
    )
    return message_dicts(rows[:limit]), len(rows) > limit


def messages_before(room_id: int, before_seq: int | None, limit: int = RECENT_PAGE_SIZE) -> tuple[list[dict], bool]:
    """Return (up to `limit` messages with seq < before_seq, oldest first, has_more).

    With before_seq None, return the most recent page.
    """
    limit = max(1, min(limit, MAX_SYNC_BATCH))
    rows = Message.objects.using(shard_for_room(room_id)).filter(room_id=room_id)
    if before_seq is not None:
        rows = rows.filter(seq__lt=before_seq)
    rows = list(rows.order_by("-seq")[: limit + 1])
    has_more = len(rows) > limit
    return message_dicts(reversed(rows[:limit])), has_more


RECENT_PAGE_CACHE_SECONDS = 600
AUTHORS_VERSION_KEY = "recent-page:authors-version"


def _cache_call(function, *args, default=None):
    """Call a cache method; a failing cache (Redis down) counts as a miss."""
    try:
        return function(*args)
    except Exception as error:
        logger.warning("History cache %s failed: %s", function.__name__, error)
        return default


def recent_page(room_id: int, limit: int = RECENT_PAGE_SIZE) -> tuple[list[dict], bool]:
    """Return messages_before(room_id, None, limit), cached per room state.

    The key contains the room's last_seq, so a new message makes a new key
    and old entries simply expire. It also contains a version that any
    change of a display name bumps (bump_authors_version), because pages
    embed authors.
    Reading last_seq is one primary-key lookup on the shard.
    """
    alias = shard_for_room(room_id)
    last_seq = last_seqs(alias, [room_id])[room_id]
    version = _cache_call(cache.get, AUTHORS_VERSION_KEY, default=0) or 0
    key = f"recent-page:{room_id}:{last_seq}:{limit}:{version}"
    page = _cache_call(cache.get, key)
    if page is None:
        page = messages_before(room_id, None, limit)
        _cache_call(cache.set, key, page, RECENT_PAGE_CACHE_SECONDS)
    return page


def bump_authors_version() -> None:
    """Invalidate every cached recent page (an author's display name changed)."""
    if _cache_call(cache.add, AUTHORS_VERSION_KEY, 1, None, default=True) is False:
        _cache_call(cache.incr, AUTHORS_VERSION_KEY)


def last_seqs_for_rooms(room_ids) -> dict[int, int | None]:
    """Return {room id: last seq} with one query per shard involved.

    A room whose shard cannot be reached maps to None, so one shard being
    down does not stop a client from connecting and using the other rooms.
    """
    by_shard = defaultdict(list)
    for room_id in room_ids:
        by_shard[shard_for_room(room_id)].append(room_id)
    result = {}
    for alias, ids in by_shard.items():
        try:
            result.update(last_seqs(alias, ids))
        except DatabaseError as error:
            logger.warning("Shard %s is unavailable for %d rooms: %s", alias, len(ids), error)
            result.update(dict.fromkeys(ids))
    return result


def member_rooms(user, room_ids=None) -> list:
    """Return the user's memberships with their rooms, ordered by room name."""
    from rooms.models import Membership

    memberships = Membership.objects.filter(user_id=user.pk).select_related("room").order_by("room__name", "room_id")
    if room_ids is not None:
        memberships = memberships.filter(room_id__in=list(room_ids))
    return list(memberships)


def summarise_rooms(memberships) -> list[dict]:
    """Return room objects as sent in hello and room.joined frames, with last_seq."""
    seqs = last_seqs_for_rooms(membership.room_id for membership in memberships)
    return [
        {
            "id": membership.room_id,
            "name": membership.room.name,
            "kind": membership.room.kind,
            "topic": membership.room.topic,
            "role": membership.role,
            "last_seq": seqs[membership.room_id],
        }
        for membership in memberships
    ]


def room_summaries(user, room_ids=None) -> list[dict]:
    """Return the rooms `user` belongs to, as sent in hello and room.joined frames."""
    return summarise_rooms(member_rooms(user, room_ids))
