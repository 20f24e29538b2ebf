"""move_bucket and shard_map against two real MariaDB shards."""

import io
import json
import threading
import time

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections

from chatproject.errors import ChatError
from messaging.actions import send_message
from messaging.models import Message, RoomSequence, ShardBucket
from messaging.sharding import (
    FENCE_CLOSED,
    FENCE_OPEN,
    bucket_accepts_writes,
    bucket_for_room,
    bucket_map,
    fence_room_id,
    set_fence,
    shard_for_room,
)
from rooms.actions import create_room, join_room

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture(autouse=True)
def fresh_bucket_map():
    bucket_map.invalidate()
    yield
    bucket_map.invalidate()


def other_shard(alias: str) -> str:
    return next(shard for shard in settings.MESSAGE_SHARDS if shard != alias)


def move(bucket: int, target: str) -> str:
    output = io.StringIO()
    call_command("move_bucket", str(bucket), target, stdout=output)
    return output.getvalue()


def shard_map() -> dict:
    output = io.StringIO()
    call_command("shard_map", "--json", stdout=output)
    return json.loads(output.getvalue())


def seqs(alias: str, room_id: int) -> list[int]:
    return list(Message.objects.using(alias).filter(room_id=room_id).order_by("seq").values_list("seq", flat=True))


def fill(author, room, count: int, prefix: str) -> None:
    for number in range(count):
        send_message(author, room.pk, f"{prefix} {number} 🧪", f"{prefix}-{number}")


class Sender(threading.Thread):
    """Send messages to one room until stopped; record every ack and every rejection."""

    def __init__(self, name: str, author, room_id: int, stop: threading.Event, limit: int = 400):
        super().__init__(name=name, daemon=True)
        self.author = author
        self.room_id = room_id
        self.stop_event = stop
        self.limit = limit
        self.acked: list[dict] = []
        self.rejected: list[tuple[str, ChatError]] = []
        self.failures: list[BaseException] = []

    def run(self):
        try:
            for number in range(self.limit):
                if self.stop_event.is_set():
                    break
                client_id = f"{self.name}-{number}"
                try:
                    self.acked.append(send_message(self.author, self.room_id, f"{self.name} {number}", client_id).message)
                except ChatError as error:
                    self.rejected.append((client_id, error))
                time.sleep(0.01)
        except BaseException as error:  # noqa: BLE001  (reported by the test's assertions)
            self.failures.append(error)
        finally:
            connections.close_all()


def test_move_under_concurrent_sends(make_user):
    owner, member = make_user("owner"), make_user("member")
    room = create_room(owner, "moving")
    join_room(member, room.pk)
    bucket = bucket_for_room(room.pk)
    source = shard_for_room(room.pk)
    target = other_shard(source)
    # A room on the same source in another bucket must not notice the move.
    bystander = next(
        candidate
        for candidate in (create_room(owner, f"bystander {index}") for index in range(50))
        if shard_for_room(candidate.pk) == source and bucket_for_room(candidate.pk) != bucket
    )
    # The first send of a room creates its sequence row. Make it before the
    # threads start, so the test exercises the move and not that race.
    fill(owner, room, 150, "before")
    fill(owner, bystander, 1, "warm")

    stop = threading.Event()
    senders = [Sender(f"s{index}", (owner, member)[index % 2], room.pk, stop) for index in range(4)]
    senders.append(Sender("bystander", owner, bystander.pk, stop))
    for sender in senders:
        sender.start()
    time.sleep(0.3)
    try:
        output = move(bucket, target)
    finally:
        time.sleep(0.5)
        stop.set()
        for sender in senders:
            sender.join(timeout=60)

    assert "Moved bucket" in output
    assert [sender.failures for sender in senders] == [[]] * len(senders)
    assert not any(sender.is_alive() for sender in senders)
    movers = senders[:4]
    acked = [message for sender in movers for message in sender.acked]
    rejected = [entry for sender in movers for entry in sender.rejected]

    bucket_map.invalidate()
    assert shard_for_room(room.pk) == target
    assert seqs(source, room.pk) == []
    stored = list(Message.objects.using(target).filter(room_id=room.pk).order_by("seq"))
    assert [message.seq for message in stored] == list(range(1, len(stored) + 1))
    assert len(stored) == 150 + len(acked)
    assert RoomSequence.objects.using(target).get(room_id=room.pk).last_seq == len(stored)

    by_client_id = {}
    for message in stored:
        assert message.client_id not in by_client_id, f"{message.client_id} stored twice"
        by_client_id[message.client_id] = message
    for message in acked:
        assert by_client_id[message["client_id"]].seq == message["seq"]
        assert by_client_id[message["client_id"]].id == int(message["id"])
    for client_id, error in rejected:
        assert error.code == "shard_unavailable"
        assert error.retryable
        assert client_id not in by_client_id
    # Sends continued on the target after the switch.
    assert any(message["seq"] > 150 for message in acked)
    assert max(message["seq"] for message in acked) == len(stored)

    bystander_sender = senders[4]
    assert bystander_sender.rejected == []
    assert seqs(source, bystander.pk) == list(range(1, len(bystander_sender.acked) + 2))


def test_stale_map_hits_closed_fence(make_user):
    # A process whose cached map still points at the source must be
    # rejected by the source's fence, not write where no one will copy.
    owner = make_user("owner")
    room = create_room(owner, "stale")
    fill(owner, room, 3, "before")
    source = shard_for_room(room.pk)
    bucket = bucket_for_room(room.pk)

    set_fence(source, bucket, FENCE_CLOSED)
    bucket_map._loaded_at = time.monotonic() + 3600  # keep the stale copy from reloading
    with pytest.raises(ChatError) as raised:
        send_message(owner, room.pk, "lost?", "after-fence")

    assert raised.value.code == "shard_unavailable"
    assert raised.value.retryable
    assert seqs(source, room.pk) == [1, 2, 3]
    assert RoomSequence.objects.using(source).get(room_id=room.pk).last_seq == 3
    assert not bucket_accepts_writes(source, bucket)
    set_fence(source, bucket, FENCE_OPEN)
    assert send_message(owner, room.pk, "open again", "after-open").message["seq"] == 4


def test_move_there_and_back(make_user):
    owner = make_user("owner")
    room = create_room(owner, "round trip")
    fill(owner, room, 30, "m")
    bucket = bucket_for_room(room.pk)
    source = shard_for_room(room.pk)
    target = other_shard(source)
    before = list(Message.objects.using(source).filter(room_id=room.pk).order_by("seq").values_list("id", "seq", "body", "client_id", "created_at"))

    move(bucket, target)
    bucket_map.invalidate()
    assert send_message(owner, room.pk, "on the target", "t").message["seq"] == 31
    move(bucket, source)
    bucket_map.invalidate()

    assert shard_for_room(room.pk) == source
    after = list(Message.objects.using(source).filter(room_id=room.pk).order_by("seq").values_list("id", "seq", "body", "client_id", "created_at"))
    assert after[:30] == before
    assert [row[1] for row in after] == list(range(1, 32))
    assert seqs(target, room.pk) == []
    assert bucket_accepts_writes(source, bucket)
    assert not bucket_accepts_writes(target, bucket)
    assert send_message(owner, room.pk, "home again", "h").message["seq"] == 32


def test_failed_copy_aborts_cleanly(make_user):
    owner = make_user("owner")
    room = create_room(owner, "poisoned")
    fill(owner, room, 20, "m")
    send_message(owner, room.pk, "poison", "poison")
    bucket = bucket_for_room(room.pk)
    source = shard_for_room(room.pk)
    target = other_shard(source)
    # A real failure on the target: its messages table refuses one row.
    with connections[target].cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messaging_message FOR EACH ROW "
            "BEGIN IF NEW.body = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF; END"
        )
    try:
        with pytest.raises(CommandError) as raised:
            move(bucket, target)
    finally:
        with connections[target].cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_poison")

    assert "aborted" in str(raised.value)
    bucket_map.invalidate()
    row = ShardBucket.objects.get(bucket=bucket)
    assert (row.alias, row.frozen) == (source, False)
    assert seqs(source, room.pk) == list(range(1, 22))
    assert seqs(target, room.pk) == []
    assert not RoomSequence.objects.using(target).filter(room_id=room.pk).exists()
    assert bucket_accepts_writes(source, bucket)
    assert not bucket_accepts_writes(target, bucket)
    assert send_message(owner, room.pk, "still here", "after-abort").message["seq"] == 22


def test_interrupted_move_abort(make_user):
    owner = make_user("owner")
    room = create_room(owner, "interrupted")
    fill(owner, room, 2, "m")
    bucket = bucket_for_room(room.pk)
    source = shard_for_room(room.pk)
    # What a move killed after its first steps leaves behind.
    ShardBucket.objects.create(bucket=bucket, alias=source, frozen=True)
    set_fence(source, bucket, FENCE_CLOSED)
    bucket_map.invalidate()
    with pytest.raises(ChatError):
        send_message(owner, room.pk, "frozen", "frozen")
    with pytest.raises(CommandError, match="already frozen"):
        move(bucket, other_shard(source))

    output = io.StringIO()
    call_command("move_bucket", str(bucket), "--abort", stdout=output)
    bucket_map.invalidate()

    assert "open again" in output.getvalue()
    assert not ShardBucket.objects.get(bucket=bucket).frozen
    assert send_message(owner, room.pk, "thawed", "thawed").message["seq"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["5000", "shard_1"], "out of range"),
        (["-1", "shard_1"], "out of range"),
        (["3", "shard_9"], "not a configured shard"),
        (["3"], "not a configured shard"),
        (["3", "--abort"], "not frozen"),
    ],
)
def test_move_bad_arguments(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("move_bucket", *arguments, stdout=io.StringIO())


def test_move_to_own_shard_rejected(make_user):
    room = create_room(make_user("owner"), "home")
    with pytest.raises(CommandError, match="already lives on"):
        move(bucket_for_room(room.pk), shard_for_room(room.pk))
    assert not ShardBucket.objects.get(bucket=bucket_for_room(room.pk)).frozen


def test_shard_map_report(make_user):
    owner = make_user("owner")
    room = create_room(owner, "mapped")
    fill(owner, room, 4, "m")
    bucket = bucket_for_room(room.pk)
    source = shard_for_room(room.pk)
    target = other_shard(source)

    before = shard_map()
    assert before["buckets"] == settings.MESSAGE_BUCKETS
    assert before["frozen"] == []
    assert before["moved"] == {}
    assert sum(shard["buckets"] for shard in before["shards"].values()) == settings.MESSAGE_BUCKETS
    assert before["shards"][source]["messages"] == 4

    move(bucket, target)
    after = shard_map()

    assert after["moved"] == {str(bucket): target}
    assert after["shards"][target]["messages"] == 4
    assert after["shards"][source]["messages"] == 0
    assert after["shards"][target]["buckets"] == before["shards"][target]["buckets"] + 1
    assert bucket in after["shards"][source]["closed_fences"]
    assert after["shards"][source]["orphan_rooms"] == 0

    text = io.StringIO()
    call_command("shard_map", stdout=text)
    assert f"moved buckets: {bucket} -> {target}" in text.getvalue()
    assert "frozen buckets: none" in text.getvalue()
    assert RoomSequence.objects.using(source).filter(room_id=fence_room_id(bucket)).exists()
