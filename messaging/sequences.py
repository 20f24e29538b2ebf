"""Gapless per-room sequence numbers.

Each room has one RoomSequence row on its shard. A send increments it with
an UPDATE inside the same shard transaction that inserts the message, so the
row lock serialises concurrent sends to one room across every process, and
a rollback (a failed insert, a duplicate client_id) returns the number: the
sequence has no gaps and no duplicates.
"""

from django.db import IntegrityError, transaction
from django.db.models import F

from messaging.models import RoomSequence


def allocate_seq(alias: str, room_id: int) -> int:
    """Return the room's next sequence number; call inside atomic(using=alias)."""
    connection = transaction.get_connection(alias)
    if not connection.in_atomic_block:
        raise RuntimeError(f"allocate_seq must run inside transaction.atomic(using={alias!r}).")
    counters = RoomSequence.objects.using(alias).filter(room_id=room_id)
    if not counters.update(last_seq=F("last_seq") + 1):
        try:
            # A savepoint, so a concurrent creator's duplicate key undoes
            # only this insert and not the caller's transaction.
            with transaction.atomic(using=alias):
                RoomSequence.objects.using(alias).create(room_id=room_id, last_seq=0)
        except IntegrityError:
            pass
        counters.update(last_seq=F("last_seq") + 1)
    return counters.values_list("last_seq", flat=True).get()


def last_seqs(alias: str, room_ids) -> dict[int, int]:
    """Return {room id: last sequence number} for rooms on one shard (0 if none)."""
    room_ids = list(room_ids)
    found = dict(
        RoomSequence.objects.using(alias).filter(room_id__in=room_ids).values_list("room_id", "last_seq")
    )
    return {room_id: found.get(room_id, 0) for room_id in room_ids}
