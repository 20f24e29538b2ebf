"""Per-room sequence numbers: gapless under concurrent threads and processes."""

import json
import os
import selectors
import threading

import pytest
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from chatproject.errors import BodyTooLong, ClientIdReused, InvalidInput, NotMember
from messaging.actions import send_message
from messaging.ids import split_id
from messaging.models import Message, RoomSequence, WorkerLease
from messaging.sequences import allocate_seq, last_seqs
from messaging.sharding import shard_for_room
from rooms.actions import create_room
from tests.conftest import run_django_setup, stored_messages

pytestmark = pytest.mark.usefixtures("fast_password_hasher")


class Rollback(Exception):
    pass


def run_in_threads(count: int, target) -> list:
    """Run target(index) in `count` threads started together and return each result or raised error."""
    results = [None] * count
    start = threading.Barrier(count)

    def run(index):
        try:
            start.wait()
            results[index] = target(index)
        except Exception as error:  # noqa: BLE001  (returned to the test, which asserts on it)
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a sending thread did not finish within 60 s"
    return results


def read_line(process, timeout: float) -> str:
    """Read one line of a subprocess's stdout, or return "" after `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().strip()


def room_last_seq(room_id: int) -> int:
    return last_seqs(shard_for_room(room_id), [room_id])[room_id]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_allocate_outside_transaction_raises():
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic\(using='shard_0'\)"):
        allocate_seq("shard_0", 1)
    assert RoomSequence.objects.using("shard_0").count() == 0


@pytest.mark.django_db(databases="__all__")
def test_allocate_counts_from_one():
    allocated = []
    for _ in range(3):
        with transaction.atomic(using="shard_1"):
            allocated.append(allocate_seq("shard_1", 42))

    assert allocated == [1, 2, 3]
    assert RoomSequence.objects.using("shard_1").get(room_id=42).last_seq == 3
    assert RoomSequence.objects.using("shard_0").filter(room_id=42).count() == 0


@pytest.mark.django_db(databases="__all__")
def test_allocate_rollback_returns_number():
    with transaction.atomic(using="shard_0"):
        assert allocate_seq("shard_0", 7) == 1
    with pytest.raises(Rollback):
        with transaction.atomic(using="shard_0"):
            assert allocate_seq("shard_0", 7) == 2
            raise Rollback
    with transaction.atomic(using="shard_0"):
        assert allocate_seq("shard_0", 7) == 2


@pytest.mark.django_db(databases="__all__")
def test_allocate_rooms_independent():
    with transaction.atomic(using="shard_0"):
        assert [allocate_seq("shard_0", 1), allocate_seq("shard_0", 1), allocate_seq("shard_0", 2)] == [1, 2, 1]
    assert last_seqs("shard_0", [1, 2, 3]) == {1: 2, 2: 1, 3: 0}


@pytest.mark.django_db(databases="__all__")
def test_rejected_sends_leave_no_gap(alice, bob, carol, general):
    assert send_message(alice, general.pk, "one", "c1").message["seq"] == 1

    with pytest.raises(ClientIdReused):
        send_message(alice, general.pk, "one, edited", "c1")
    with pytest.raises(BodyTooLong):
        send_message(alice, general.pk, "x" * 4001, "c2")
    with pytest.raises(InvalidInput):
        send_message(alice, general.pk, "two", "not valid")
    with pytest.raises(NotMember):
        send_message(carol, general.pk, "intruder", "c3")

    assert send_message(bob, general.pk, "two", "c2").message["seq"] == 2
    assert [(row.seq, row.body) for row in stored_messages()] == [(1, "one"), (2, "two")]
    assert room_last_seq(general.pk) == 2


@pytest.mark.django_db(databases="__all__")
def test_failed_insert_returns_seq(alice, general):
    alias = shard_for_room(general.pk)
    send_message(alice, general.pk, "one", "c1")
    # A row with seq 2 that the counter does not know about, so the next
    # insert fails on the (room_id, seq) unique constraint inside the transaction.
    Message.objects.using(alias).create(
        id=1, room_id=general.pk, seq=2, author_id=alice.pk, body="planted", client_id="planted",
        created_at=timezone.now(),
    )

    with pytest.raises(IntegrityError):
        send_message(alice, general.pk, "two", "c2")

    assert room_last_seq(general.pk) == 1
    assert [(row.seq, row.client_id) for row in stored_messages()] == [(1, "c1"), (2, "planted")]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_threads_gapless(alice, bob, general):
    threads, per_thread = 8, 20
    authors = [alice, bob]

    def send_batch(index):
        return [
            send_message(authors[index % 2], general.pk, f"thread {index} message {number}", f"t{index}-{number}")
            for number in range(per_thread)
        ]

    results = run_in_threads(threads, send_batch)

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    total = threads * per_thread
    rows = stored_messages(room_id=general.pk)
    assert [row.seq for row in rows] == list(range(1, total + 1))
    assert len({row.id for row in rows}) == total
    assert room_last_seq(general.pk) == total
    for batch in results:
        seqs = [result.message["seq"] for result in batch]
        assert seqs == sorted(seqs)
        assert all(result.created for result in batch)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_threads_same_client_id_stored_once(alice, general):
    results = run_in_threads(6, lambda index: send_message(alice, general.pk, "only once", "same-id"))

    assert not [result for result in results if isinstance(result, Exception)]
    assert [result.created for result in results].count(True) == 1
    assert len({json.dumps(result.message, sort_keys=True) for result in results}) == 1
    rows = stored_messages()
    assert [(row.seq, row.client_id, row.body) for row in rows] == [(1, "same-id", "only once")]
    assert room_last_seq(general.pk) == 1


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_threads_many_rooms_gapless(alice):
    rooms = [create_room(alice, f"room {index}") for index in range(4)]

    def send_batch(index):
        room = rooms[index % len(rooms)]
        return [send_message(alice, room.pk, f"{index}/{number}", f"r{index}-{number}") for number in range(15)]

    results = run_in_threads(8, send_batch)

    assert not [result for result in results if isinstance(result, Exception)]
    for room in rooms:
        assert [row.seq for row in stored_messages(room_id=room.pk)] == list(range(1, 31)), room.pk
        assert room_last_seq(room.pk) == 30


# A separate Python process that sends `count` messages to one room. It
# opens the test databases (their TEST NAME files) instead of the regular
# ones, leases its own worker id, reports "ready" and waits for one line on
# stdin so that every process starts sending at the same moment.
SEND_FROM_PROCESS = """
import json
import sys

from django.conf import settings
from django.contrib.auth import get_user_model

options = json.loads(sys.argv[1])
for alias, name in options["databases"].items():
    settings.DATABASES[alias]["NAME"] = name

from messaging.actions import send_message
from messaging.ids import get_generator

author = get_user_model().objects.get(pk=options["author"])
get_generator().next_id()
print("ready", flush=True)
sys.stdin.readline()
prefix = options["prefix"]
messages = [
    send_message(author, options["room"], f"{prefix} {number}", f"{prefix}-{number}").message
    for number in range(options["count"])
]
print(json.dumps({"worker_id": get_generator().worker_id, "messages": messages}), flush=True)
"""


SERVER_VARIABLES = ("DATABASE_URL", "MESSAGE_SHARD_URLS", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_processes_gapless(alice, bob, general, tmp_path):
    processes_count, per_process = 4, 25
    databases = {alias: connections[alias].settings_dict["NAME"] for alias in settings.DATABASES}
    # The subprocesses must write to the test databases, never the real ones.
    assert all(os.path.basename(name).startswith("test") for name in databases.values()), databases

    processes = []
    for index in range(processes_count):
        options = {
            "databases": databases,
            "author": (alice, bob)[index % 2].pk,
            "room": general.pk,
            "count": per_process,
            "prefix": f"p{index}",
        }
        # Same backends as this process (MariaDB and Redis in that pass);
        # the database names are then pointed at the test databases.
        env = {name: os.environ[name] for name in SERVER_VARIABLES if name in os.environ}
        env["CHAT_DATA_DIR"] = str(tmp_path)
        code = SEND_FROM_PROCESS.replace("sys.argv[1]", repr(json.dumps(options)))
        processes.append(run_django_setup(env, code))
    try:
        for process in processes:
            assert read_line(process, timeout=60) == "ready", process.stderr.read()[-2000:]
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=90)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    total = processes_count * per_process
    worker_ids = [output["worker_id"] for output in outputs]
    assert len(set(worker_ids)) == processes_count, worker_ids
    assert WorkerLease.objects.filter(worker_id__in=worker_ids).exclude(owner="").count() == 0, (
        "each process releases its worker id at exit"
    )
    for output in outputs:
        seqs = [message["seq"] for message in output["messages"]]
        assert seqs == sorted(seqs)
        assert {split_id(int(message["id"]))[1] for message in output["messages"]} == {output["worker_id"]}

    rows = stored_messages(room_id=general.pk)
    assert [row.seq for row in rows] == list(range(1, total + 1))
    assert len({row.id for row in rows}) == total
    assert room_last_seq(general.pk) == total
    sent = {(message["client_id"], message["seq"]) for output in outputs for message in output["messages"]}
    assert sent == {(row.client_id, row.seq) for row in rows}
