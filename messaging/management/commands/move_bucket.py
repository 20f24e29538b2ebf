"""Move one virtual bucket of rooms to another message shard while the server runs.

The steps, each logged:

1. Freeze the bucket in the main database. Processes that have seen the
   freeze reject sends to its rooms with the retryable shard_unavailable
   error at once.
2. Close the bucket's fence on the target and on the source shard, then
   lock the sequence row of every room of the bucket on the source once.
   The lock waits for each send that passed the fence before it closed;
   every later send, even from a process with a stale map, sees the
   closed fence and is rejected (messaging.sharding has the reasoning).
3. Copy the rooms' messages and sequence rows to the target, then compare
   counts, last sequence numbers and a SHA-256 digest of every row.
4. Open the target's fence and switch the map row to the target, which
   also unfreezes the bucket.
5. Wait until every process has reloaded the map, so no read goes to the
   source any more, then delete the rooms' rows from the source. The
   source keeps its fence closed.

Any failure before step 4 completes aborts the move: the copies on the
target are deleted, the source's fence reopens and the bucket unfreezes,
leaving the source as it was.
"""

import hashlib
import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from messaging.models import Message, RoomSequence, ShardBucket
from messaging.sharding import (
    BUCKET_MAP_TTL_SECONDS,
    FENCE_CLOSED,
    FENCE_OPEN,
    bucket_for_room,
    bucket_map,
    default_alias_for_bucket,
    pin_defaults,
    set_fence,
)

DEFAULT_BATCH_SIZE = 1000
# IN lists are cut to this many ids so no statement grows without bound.
ID_CHUNK = 500


def chunked(items, size):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rooms_in_bucket_on(alias: str, bucket: int) -> set[int]:
    """Return ids of rooms of `bucket` that have messages or a sequence row on `alias`."""
    rooms = {
        room_id
        for room_id in RoomSequence.objects.using(alias).filter(room_id__gt=0).values_list("room_id", flat=True)
        if bucket_for_room(room_id) == bucket
    }
    message_rooms = Message.objects.using(alias).values_list("room_id", flat=True).distinct()
    rooms.update(room_id for room_id in message_rooms if bucket_for_room(room_id) == bucket)
    return rooms


def room_digest(alias: str, room_id: int, batch_size: int) -> tuple[int, str]:
    """Return (row count, SHA-256 hex digest) of a room's messages on `alias`, in seq order."""
    digest = hashlib.sha256()
    count = 0
    after = 0
    while True:
        rows = list(
            Message.objects.using(alias)
            .filter(room_id=room_id, seq__gt=after)
            .order_by("seq")
            .values_list("id", "seq", "author_id", "body", "client_id", "created_at")[:batch_size]
        )
        if not rows:
            return count, digest.hexdigest()
        for message_id, seq, author_id, body, client_id, created_at in rows:
            # Length-prefixed fields, so no body can imitate a field boundary.
            for field in (str(message_id), str(seq), str(author_id), body, client_id, created_at.isoformat()):
                encoded = field.encode("utf-8")
                digest.update(len(encoded).to_bytes(4, "big"))
                digest.update(encoded)
        count += len(rows)
        after = rows[-1][1]


def last_seq_on(alias: str, room_id: int) -> int | None:
    return RoomSequence.objects.using(alias).filter(room_id=room_id).values_list("last_seq", flat=True).first()


def delete_rooms(alias: str, room_ids, batch_size: int) -> int:
    """Delete the rooms' messages and sequence rows on `alias` in batches; return how many messages."""
    deleted = 0
    for room_id in room_ids:
        while True:
            ids = list(Message.objects.using(alias).filter(room_id=room_id).values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            deleted += Message.objects.using(alias).filter(id__in=ids).delete()[0]
        RoomSequence.objects.using(alias).filter(room_id=room_id).delete()
    return deleted


class MoveFailed(CommandError):
    pass


class BucketMove:
    def __init__(self, bucket: int, target: str, batch_size: int, log):
        self.bucket = bucket
        self.target = target
        self.batch_size = batch_size
        self.log = log
        self.source: str | None = None

    # Steps

    def freeze(self) -> str:
        """Mark the bucket frozen in the main database; return its current shard."""
        # Every bucket gets an explicit row first: the default assignment
        # depends on the number of shards, which may change later.
        pin_defaults()
        with transaction.atomic(using="default"):
            row, _ = ShardBucket.objects.select_for_update().get_or_create(
                bucket=self.bucket, defaults={"alias": default_alias_for_bucket(self.bucket)}
            )
            if row.frozen:
                raise CommandError(
                    f"Bucket {self.bucket} is already frozen: another move is running, or one was "
                    f"interrupted. If none is running, run: manage.py move_bucket {self.bucket} --abort"
                )
            if row.alias == self.target:
                raise CommandError(f"Bucket {self.bucket} already lives on {self.target}.")
            row.frozen = True
            row.save(update_fields=["frozen", "updated_at"])
        bucket_map.invalidate()
        return row.alias

    def rooms_to_fence(self) -> set[int]:
        """Return every room a send could be writing to on the source: the bucket's rooms."""
        from rooms.models import Room

        rooms = {
            room_id
            for room_id in Room.objects.using("default").values_list("id", flat=True).iterator(chunk_size=5000)
            if bucket_for_room(room_id) == self.bucket
        }
        return rooms | rooms_in_bucket_on(self.source, self.bucket)

    def wait_for_sends(self, room_ids) -> None:
        """Lock each room's sequence row once, waiting out sends that passed the open fence."""
        for chunk in chunked(sorted(room_ids), ID_CHUNK):
            with transaction.atomic(using=self.source):
                list(
                    RoomSequence.objects.using(self.source)
                    .select_for_update()
                    .filter(room_id__in=chunk)
                    .values_list("room_id", flat=True)
                )

    def copy_room(self, room_id: int) -> int:
        after = 0
        copied = 0
        while True:
            batch = list(
                Message.objects.using(self.source)
                .filter(room_id=room_id, seq__gt=after)
                .order_by("seq")[: self.batch_size]
            )
            if not batch:
                break
            copies = [
                Message(**{field.attname: getattr(message, field.attname) for field in Message._meta.concrete_fields})
                for message in batch
            ]
            with transaction.atomic(using=self.target):
                Message.objects.using(self.target).bulk_create(copies)
            copied += len(batch)
            after = batch[-1].seq
        sequence = RoomSequence.objects.using(self.source).filter(room_id=room_id).first()
        if sequence is not None:
            RoomSequence.objects.using(self.target).create(room_id=room_id, last_seq=sequence.last_seq)
        return copied

    def verify_room(self, room_id: int) -> None:
        source_count, source_digest = room_digest(self.source, room_id, self.batch_size)
        target_count, target_digest = room_digest(self.target, room_id, self.batch_size)
        if (source_count, source_digest) != (target_count, target_digest):
            raise MoveFailed(
                f"Room {room_id}: the copy on {self.target} has {target_count} messages (digest "
                f"{target_digest[:12]}), the source {self.source} has {source_count} (digest {source_digest[:12]})."
            )
        source_seq = last_seq_on(self.source, room_id)
        target_seq = last_seq_on(self.target, room_id)
        if source_seq != target_seq:
            raise MoveFailed(
                f"Room {room_id}: last sequence number {target_seq} on {self.target} differs from {source_seq} on {self.source}."
            )

    def switch(self) -> None:
        """Point the bucket at the target and unfreeze it, in one main-database update."""
        updated = ShardBucket.objects.filter(bucket=self.bucket, alias=self.source, frozen=True).update(
            alias=self.target, frozen=False
        )
        if updated != 1:
            raise MoveFailed(f"The map row of bucket {self.bucket} changed during the move, so the move did not switch it.")
        bucket_map.invalidate()

    def abort(self) -> None:
        """Undo a move that has not switched, logging each step that fails and going on."""
        def delete_copies():
            delete_rooms(self.target, rooms_in_bucket_on(self.target, self.bucket), self.batch_size)

        def unfreeze():
            ShardBucket.objects.filter(bucket=self.bucket, alias=self.source).update(frozen=False)

        steps = [
            (f"delete partial copies on {self.target}", delete_copies),
            (f"close the fence on {self.target}", lambda: set_fence(self.target, self.bucket, FENCE_CLOSED)),
            (f"reopen the fence on {self.source}", lambda: set_fence(self.source, self.bucket, FENCE_OPEN)),
            ("unfreeze the bucket", unfreeze),
        ]
        for description, step in steps:
            try:
                step()
                self.log(f"Abort: {description}: done")
            except Exception as error:  # noqa: BLE001  (each undo step runs even if one fails)
                self.log(f"Abort: {description}: FAILED: {error}")
        bucket_map.invalidate()

    # The whole move

    def run(self) -> dict:
        started = time.monotonic()
        self.source = self.freeze()
        frozen_at = time.monotonic()
        self.log(f"Bucket {self.bucket}: frozen on {self.source}; moving to {self.target}")
        try:
            set_fence(self.target, self.bucket, FENCE_CLOSED)
            set_fence(self.source, self.bucket, FENCE_CLOSED)
            self.wait_for_sends(self.rooms_to_fence())
            room_ids = sorted(rooms_in_bucket_on(self.source, self.bucket))
            self.log(f"Fences closed; {len(room_ids)} room(s) with messages on {self.source}")

            leftovers = rooms_in_bucket_on(self.target, self.bucket)
            if leftovers:
                removed = delete_rooms(self.target, leftovers, self.batch_size)
                self.log(f"Deleted {removed} stale message(s) of this bucket left on {self.target} by an earlier move")

            copied = sum(self.copy_room(room_id) for room_id in room_ids)
            self.log(f"Copied {copied} message(s) to {self.target}")
            for room_id in room_ids:
                self.verify_room(room_id)
            self.log("Counts, sequence numbers and digests match")

            set_fence(self.target, self.bucket, FENCE_OPEN)
            self.switch()
        except BaseException as error:
            self.log(f"Move of bucket {self.bucket} failed before the switch: {error!r}. Aborting.")
            self.abort()
            if isinstance(error, CommandError):
                raise
            if isinstance(error, Exception):
                raise MoveFailed(f"Move of bucket {self.bucket} aborted: {error}") from error
            raise
        frozen_seconds = time.monotonic() - frozen_at
        self.log(f"Switched bucket {self.bucket} to {self.target}; it was frozen for {frozen_seconds:.3f} s")

        # A process reads the map at most BUCKET_MAP_TTL_SECONDS old, and a
        # read that routed to the source just before the switch must find
        # its rows, so the delete waits two cache lifetimes.
        time.sleep(2 * BUCKET_MAP_TTL_SECONDS + 1)
        try:
            deleted = delete_rooms(self.source, room_ids, self.batch_size)
        except Exception as error:
            raise CommandError(
                f"Bucket {self.bucket} now lives on {self.target}, but deleting its old rows on "
                f"{self.source} failed: {error}. The leftovers are unreachable (the fence on "
                f"{self.source} stays closed); a later move of this bucket back to {self.source} deletes them."
            ) from error
        self.log(f"Deleted {deleted} message(s) from {self.source}")
        return {
            "bucket": self.bucket,
            "source": self.source,
            "target": self.target,
            "rooms": len(room_ids),
            "messages": copied,
            "seconds": round(time.monotonic() - started, 3),
            "frozen_seconds": round(frozen_seconds, 3),
        }


def abort_interrupted_move(bucket: int, log) -> None:
    """Reopen a frozen bucket on its current shard after a move died without cleaning up."""
    row = ShardBucket.objects.filter(bucket=bucket).first()
    if row is None or not row.frozen:
        raise CommandError(f"Bucket {bucket} is not frozen, so there is no move to abort.")
    set_fence(row.alias, bucket, FENCE_OPEN)
    ShardBucket.objects.filter(bucket=bucket, alias=row.alias).update(frozen=False)
    bucket_map.invalidate()
    log(
        f"Bucket {bucket} is open again on {row.alias}. Copies the interrupted move left on another "
        f"shard are unreachable and are deleted by the next move of this bucket to that shard."
    )


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Command(BaseCommand):
    help = "Move one virtual bucket of rooms to another message shard while the server keeps running."

    def add_arguments(self, parser):
        parser.add_argument("bucket", type=int, help="Bucket number, 0 to MESSAGE_BUCKETS - 1.")
        parser.add_argument("target", nargs="?", help="Alias of the target shard, such as shard_1.")
        parser.add_argument(
            "--abort",
            action="store_true",
            help="Unfreeze a bucket whose move was interrupted (the process was killed) and reopen it on its current shard.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Messages copied, compared or deleted per statement (default {DEFAULT_BATCH_SIZE}).",
        )

    def handle(self, *args, bucket, target, abort, batch_size, **options):
        from django.conf import settings

        if not 0 <= bucket < settings.MESSAGE_BUCKETS:
            raise CommandError(f"Bucket {bucket} is out of range. Buckets are 0 to {settings.MESSAGE_BUCKETS - 1}.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if abort:
            abort_interrupted_move(bucket, self.stdout.write)
            return
        if target not in settings.MESSAGE_SHARDS:
            raise CommandError(
                f"Target {target!r} is not a configured shard. Configured shards: {', '.join(settings.MESSAGE_SHARDS)}."
            )
        # SIGTERM (a stopped container, say) then runs the abort path
        # instead of leaving the bucket frozen.
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
        try:
            result = BucketMove(bucket, target, batch_size, self.stdout.write).run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.stdout.write(
            f"Moved bucket {result['bucket']} from {result['source']} to {result['target']}: "
            f"{result['rooms']} room(s), {result['messages']} message(s) in {result['seconds']} s, "
            f"frozen for {result['frozen_seconds']} s"
        )
