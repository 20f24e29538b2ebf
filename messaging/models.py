from django.db import models
from django.utils.translation import gettext_lazy as _

MAX_BODY_LENGTH = 4000
MAX_CLIENT_ID_LENGTH = 64


class Message(models.Model):
    """A chat message, stored on the shard that owns its room's bucket.

    Rooms and users live in the main database, so room_id and author_id are
    plain integers rather than foreign keys: a relation cannot cross
    databases.
    """

    # Application-generated, time-ordered 64-bit id (messaging.ids); never
    # a per-database auto-increment, so ids stay unique across shards.
    id = models.BigIntegerField(primary_key=True)
    room_id = models.BigIntegerField(_("room id"))
    # Gapless per-room sequence number: 1, 2, 3, ... (messaging.sequences).
    seq = models.BigIntegerField(_("sequence number"))
    author_id = models.BigIntegerField(_("author id"))
    body = models.TextField(_("body"))
    client_id = models.CharField(_("client id"), max_length=MAX_CLIENT_ID_LENGTH)
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        constraints = [
            models.UniqueConstraint(fields=["room_id", "seq"], name="messaging_message_unique_room_seq"),
            # Makes a retried send idempotent: the same author sending the
            # same client_id to the same room can only ever store one row.
            models.UniqueConstraint(
                fields=["room_id", "author_id", "client_id"], name="messaging_message_unique_client_id"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} in room {self.room_id}"


class RoomSequence(models.Model):
    """The last sequence number given out in a room, on the room's shard."""

    room_id = models.BigIntegerField(primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("room sequence")


class ShardBucket(models.Model):
    """One virtual bucket's assignment to a shard alias (main database).

    Rooms hash into MESSAGE_BUCKETS buckets; a bucket without a row lives
    on the default assignment (bucket modulo the number of shards). Moving
    a bucket rewrites its row, never the rooms.
    """

    bucket = models.PositiveIntegerField(primary_key=True)
    alias = models.CharField(max_length=64)
    # Set while the bucket is being moved: sends to its rooms are rejected
    # with a retryable error until the move switches or aborts.
    frozen = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("shard bucket")


class WorkerLease(models.Model):
    """A message-id worker id leased by one server process (main database)."""

    worker_id = models.PositiveSmallIntegerField(primary_key=True)
    owner = models.CharField(max_length=200, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    # Highest id timestamp (ms) the last holder issued; a new holder never
    # issues ids below it, which covers a clock that stepped back across a
    # restart.
    last_ms = models.BigIntegerField(default=0)
