"""Map rooms to message shards through virtual buckets.

A room hashes into one of MESSAGE_BUCKETS buckets, and the bucket map in
the main database assigns each bucket to a shard alias. A bucket with no
row in the map uses the default assignment, bucket modulo the number of
shards. Adding a shard or rebalancing moves whole buckets, never rooms one
by one.

Every server process keeps the map in memory and reloads it after
BUCKET_MAP_TTL_SECONDS, so a change reaches all processes within that time.
"""

import hashlib
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

BUCKET_MAP_TTL_SECONDS = 2.0


def bucket_for_room(room_id: int) -> int:
    # A keyed hash rather than room_id % buckets: consecutive room ids then
    # spread evenly, and the mapping is the same in every process and language.
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
        self._rows = rows
        self._loaded_at = time.monotonic()

    def placement(self, bucket: int) -> BucketPlacement:
        with self._lock:
            if time.monotonic() - self._loaded_at > BUCKET_MAP_TTL_SECONDS:
                self._load()
            placement = self._rows.get(bucket)
        return placement or BucketPlacement(default_alias_for_bucket(bucket), False)


bucket_map = BucketMap()


def placement_for_room(room_id: int) -> BucketPlacement:
    return bucket_map.placement(bucket_for_room(room_id))


def shard_for_room(room_id: int) -> str:
    return placement_for_room(room_id).alias
