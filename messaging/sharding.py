"""Map rooms to message shards through virtual buckets.

A room hashes into one of MESSAGE_BUCKETS buckets, and the bucket map in
the main database assigns each bucket to a shard alias. A bucket with no
row in the map uses the default assignment, bucket modulo the number of
shards. Adding a shard or rebalancing moves whole buckets, never rooms one
by one.

Every server process keeps the map in memory and reloads it after
BUCKET_MAP_TTL_SECONDS, so a change reaches all processes within that time.

A process whose copy of the map is stale must not write to a shard that
has just lost a bucket. So each shard that took part in a move of a bucket
keeps a fence for it: a RoomSequence row with the reserved negative key
fence_room_id(bucket), whose last_seq is FENCE_OPEN or FENCE_CLOSED.

A send reads the fence inside its shard transaction, after allocate_seq
has locked the room's sequence row (check_bucket_open). move_bucket closes
the fence and then locks every sequence row of the bucket once. That lock
waits for each send already past its fence check, and every later send
reads the closed fence and is rejected. So a move need not wait for the
map caches to expire, and a send pays one primary-key read on its own
shard. A shard without a fence row for a bucket has never taken part in a
move of it, and writes to it are allowed.
"""

import hashlib
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _

from chatproject.errors import ShardUnavailable

BUCKET_MAP_TTL_SECONDS = 2.0

FENCE_OPEN = 0
FENCE_CLOSED = 1


def bucket_for_room(room_id: int) -> int:
    # BLAKE2b of the decimal room id (personalisation "chatroom") rather
    # than room_id % buckets: consecutive room ids then spread evenly, and
    # the mapping is the same in every process and language.
    digest = hashlib.blake2b(str(int(room_id)).encode(), digest_size=8, person=b"chatroom").digest()
    return int.from_bytes(digest, "big") % settings.MESSAGE_BUCKETS


def default_alias_for_bucket(bucket: int) -> str:
    shards = settings.MESSAGE_SHARDS
    return shards[bucket % len(shards)]


@dataclass(frozen=True)
class BucketPlacement:
    alias: str
    frozen: bool


class BucketMap:
    def __init__(self):
        self._lock = threading.Lock()
        self._rows: dict[int, BucketPlacement] = {}
        self._loaded_at = float("-inf")

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")

    def _load(self) -> None:
        from messaging.models import ShardBucket

        rows = {}
        for bucket, alias, frozen in ShardBucket.objects.values_list("bucket", "alias", "frozen"):
            if alias not in settings.MESSAGE_SHARDS:
                raise ImproperlyConfigured(
                    f"The bucket map assigns bucket {bucket} to shard {alias!r}, which is not "
                    f"configured; configured shards: {', '.join(settings.MESSAGE_SHARDS)}."
                )
            rows[bucket] = BucketPlacement(alias, frozen)
        # A row beyond the bucket count means MESSAGE_BUCKETS was lowered,
        # which would silently move rooms to other buckets and shards.
        # NOTE: raising MESSAGE_BUCKETS moves rooms too, but leaves no such
        # trace in the map, so it goes undetected.
        if rows and max(rows) >= settings.MESSAGE_BUCKETS:
            raise ImproperlyConfigured(
                f"The bucket map has bucket {max(rows)} but MESSAGE_BUCKETS is {settings.MESSAGE_BUCKETS}; "
                f"MESSAGE_BUCKETS must stay at the value the map was made with."
            )
        self._rows = rows
        self._loaded_at = time.monotonic()

    def placement(self, bucket: int) -> BucketPlacement:
        with self._lock:
            if time.monotonic() - self._loaded_at > BUCKET_MAP_TTL_SECONDS:
                self._load()
            placement = self._rows.get(bucket)
        return placement or BucketPlacement(default_alias_for_bucket(bucket), False)


def pin_defaults() -> int:
    """Write a map row for every bucket that has none; return how many were written.

    The default assignment depends on the number of shards, so the rows
    must exist before a shard is added, or buckets would change shards.
    """
    from messaging.models import ShardBucket

    existing = set(ShardBucket.objects.values_list("bucket", flat=True))
    rows = [
        ShardBucket(bucket=bucket, alias=default_alias_for_bucket(bucket))
        for bucket in range(settings.MESSAGE_BUCKETS)
        if bucket not in existing
    ]
    ShardBucket.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(rows)


bucket_map = BucketMap()


def placement_for_room(room_id: int) -> BucketPlacement:
    return bucket_map.placement(bucket_for_room(room_id))


def shard_for_room(room_id: int) -> str:
    return placement_for_room(room_id).alias


def fence_room_id(bucket: int) -> int:
    """Return the reserved RoomSequence key of `bucket`'s fence (never a real room id)."""
    return -(int(bucket) + 1)


def bucket_accepts_writes(alias: str, bucket: int) -> bool:
    """Return False when `alias` has closed its fence for `bucket`."""
    from messaging.models import RoomSequence

    state = (
        RoomSequence.objects.using(alias)
        .filter(room_id=fence_room_id(bucket))
        .values_list("last_seq", flat=True)
        .first()
    )
    return state is None or state == FENCE_OPEN


def set_fence(alias: str, bucket: int, state: int) -> None:
    """Open or close `bucket`'s fence on `alias` and commit it."""
    from django.db import transaction

    from messaging.models import RoomSequence

    with transaction.atomic(using=alias):
        RoomSequence.objects.using(alias).update_or_create(
            room_id=fence_room_id(bucket), defaults={"last_seq": state}
        )


def check_bucket_open(alias: str, room_id: int) -> None:
    """Raise ShardUnavailable if `alias` no longer takes writes for the room's bucket.

    Call inside the send's transaction on `alias`, after allocate_seq has
    locked the room's sequence row; see the module docstring for why that
    order makes a bucket move safe.
    """
    if not bucket_accepts_writes(alias, bucket_for_room(room_id)):
        # The cached map is stale: forget it so the retry routes anew.
        bucket_map.invalidate()
        raise ShardUnavailable(_("This room's messages are being moved; try again in a few seconds."))
