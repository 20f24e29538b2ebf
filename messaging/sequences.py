"""Gapless per-room sequence numbers.

Each room has one RoomSequence row on its shard. A send increments it with
an UPDATE (an upsert for the first message) inside the same shard
transaction that inserts the message, so the
row lock serialises concurrent sends to one room across every process, and
a rollback (a failed insert, a duplicate client_id) returns the number: the
sequence has no gaps and no duplicates.
"""

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F

from messaging.models import RoomSequence


def allocate_seq(alias: str, room_id: int) -> int:
    """Return the room's next sequence number; call inside atomic(using=alias)."""
    connection = transaction.get_connection(alias)
    if not connection.in_atomic_block:
        raise RuntimeError(f"allocate_seq must run inside transaction.atomic(using={alias!r}).")
    counters = RoomSequence.objects.using(alias).filter(room_id=room_id)
    if not counters.update(last_seq=F("last_seq") + 1):
        # The room's first message. One upsert statement, not INSERT then
        # UPDATE: on MariaDB two first sends doing the latter each keep a
        # shared lock from their failed INSERT and deadlock in the UPDATE.
        _upsert_first_seq(connection, room_id)
    return counters.values_list("last_seq", flat=True).get()


def _upsert_first_seq(connection, room_id: int) -> None:
    table = connection.ops.quote_name(RoomSequence._meta.db_table)
    if connection.vendor == "mysql":
        sql = (
            f"INSERT INTO {table} (room_id, last_seq) VALUES (%s, 1) "
            f"ON DUPLICATE KEY UPDATE last_seq = last_seq + 1"
        )
    elif connection.vendor == "sqlite":
        sql = (
            f"INSERT INTO {table} (room_id, last_seq) VALUES (%s, 1) "
            f"ON CONFLICT (room_id) DO UPDATE SET last_seq = last_seq + 1"
        )
    else:
        raise ImproperlyConfigured(f"Message shards support MySQL/MariaDB and SQLite, not {connection.vendor}.")
    with connection.cursor() as cursor:
        cursor.execute(sql, [room_id])


def last_seqs(alias: str, room_ids) -> dict[int, int]:
    """Return {room id: last sequence number} for rooms on one shard (0 if none)."""
    room_ids = list(room_ids)
    found = dict(
        RoomSequence.objects.using(alias).filter(room_id__in=room_ids).values_list("room_id", "last_seq")
    )
    return {room_id: found.get(room_id, 0) for room_id in room_ids}
